//! The HTTP API on a unix socket: Docker Engine API for networks (with or without the `/vX.Y`
//! prefix), berth's own container endpoints in Docker's shapes, `/openapi.json`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api::types::*;
use berth_plan::model::{ContainerSpec, ContainerState, NetworkMode, NetworkSpec, Status};
use berth_plan::network::{self as planner, IpamRequest, NetworkRequest};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tower::Layer;

use crate::daemon::{endpoint_request, mode_name, Daemon};
use crate::error::{ApiError, ApiResult};

type D = State<Arc<Daemon>>;

/// The largest request body berthd reads (made explicit so that the refusal can say it): a
/// client cannot make berthd hold more memory than this per request. Not axum's 2 MiB: a
/// Docker client publishing every port (`-p 1-65535:1-65535`) sends one `PortBindings` entry
/// (and one `ExposedPorts` entry, with the docker CLI) per port, about 3.7 MB; 8 MiB holds
/// that for TCP and UDP together.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Builds the router.
pub fn router(d: Arc<Daemon>) -> Router {
    let router = Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/system/check", get(system_check))
        .route("/cluster/nodes", get(cluster_nodes))
        .route("/system/topology", get(system_topology))
        .route("/system/trace", post(system_trace))
        .route("/openapi.json", get(openapi))
        .route("/networks", get(list_networks))
        .route("/networks/create", post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route(
            "/networks/{id}",
            get(inspect_network).delete(remove_network),
        )
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route("/containers/create", post(create_container))
        .route("/containers/json", get(list_containers))
        .route("/containers/{id}/json", get(inspect_container))
        .route("/containers/{id}/start", post(start_container))
        .route("/containers/{id}/stop", post(stop_container))
        .route("/containers/{id}/restart", post(restart_container))
        .route("/containers/{id}/kill", post(kill_container))
        .route("/containers/{id}/update", post(update_container))
        .route("/containers/{id}/wait", post(wait_container))
        .route("/containers/{id}/attach", post(attach_container))
        .route("/containers/{id}/resize", post(resize_container))
        .route("/exec/{id}/resize", post(resize_exec))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/explain", get(explain))
        .route("/containers/{id}", axum::routing::delete(remove_container))
        .route("/containers/{id}/exec", post(create_exec))
        .route("/exec/{id}/start", post(start_exec))
        .route("/exec/{id}/json", get(inspect_exec));
    swarm_routes(router)
        // dockerd answers an unknown path and a known path with the wrong method alike.
        .fallback(page_not_found)
        .method_not_allowed_fallback(page_not_found)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::map_response(docker_headers))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(d)
}

/// Keeps idle CPUs polling from a request's arrival until its answer is written (or
/// [`berth_kernel::cpu_latency::HOLD_CAP`] ran out): see [`berth_kernel::cpu_latency`]. The
/// hold goes with the response's body, which hyper drops once it wrote the last of it.
async fn awake_while_answering(
    State(latency): State<Arc<berth_kernel::cpu_latency::CpuLatency>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(hold) = latency.hold() else {
        return next.run(req).await;
    };
    next.run(req).await.map(|body| {
        axum::body::Body::new(HeldBody {
            body,
            hold: Some(hold),
        })
    })
}

/// A response body that holds a CPU latency request until its end (or its drop).
struct HeldBody {
    body: axum::body::Body,
    hold: Option<berth_kernel::cpu_latency::Hold>,
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None | Some(Err(_))) = &polled {
            self.hold = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// dockerd's answer to a path it does not serve (404, also for a wrong method).
async fn page_not_found() -> ApiError {
    ApiError::not_found("page not found")
}

/// dockerd's message for the swarm endpoints of a node that is not a swarm manager.
pub const NOT_SWARM_MANAGER: &str =
    "This node is not a swarm manager. Use \"docker swarm init\" or \
     \"docker swarm join\" to connect this node to swarm and try again.";
/// dockerd's message for `POST /swarm/leave` on a node that is in no swarm.
pub const NOT_IN_SWARM: &str = "This node is not part of a swarm";

/// The swarm endpoints of dockerd (moby's `api/server/router/swarm`), each answering 503 as
/// a dockerd outside any swarm does. `init` and `join` would make dockerd a swarm node: berth
/// cannot be one, so it says that instead.
fn swarm_routes(mut r: Router<Arc<Daemon>>) -> Router<Arc<Daemon>> {
    use axum::routing::MethodRouter;
    let not_manager = || async { ApiError::unavailable(NOT_SWARM_MANAGER) };
    let table: Vec<(&str, MethodRouter<Arc<Daemon>>)> = vec![
        (
            "/swarm/init",
            post(|| async { ApiError::unavailable(NO_SWARM_MODE) }),
        ),
        (
            "/swarm/join",
            post(|| async { ApiError::unavailable(NO_SWARM_MODE) }),
        ),
        (
            "/swarm/leave",
            post(|| async { ApiError::unavailable(NOT_IN_SWARM) }),
        ),
        ("/swarm", get(not_manager)),
        ("/swarm/unlockkey", get(not_manager)),
        ("/swarm/update", post(not_manager)),
        ("/swarm/unlock", post(not_manager)),
        ("/services", get(not_manager)),
        ("/services/create", post(not_manager)),
        ("/services/{id}", get(not_manager).delete(not_manager)),
        ("/services/{id}/update", post(not_manager)),
        ("/services/{id}/logs", get(not_manager)),
        ("/nodes", get(not_manager)),
        ("/nodes/{id}", get(not_manager).delete(not_manager)),
        ("/nodes/{id}/update", post(not_manager)),
        ("/tasks", get(not_manager)),
        ("/tasks/{id}", get(not_manager)),
        ("/tasks/{id}/logs", get(not_manager)),
    ];
    for (path, m) in table {
        r = r.route(path, m);
    }
    for kind in ["secrets", "configs"] {
        r = r
            .route(&format!("/{kind}"), get(not_manager))
            .route(&format!("/{kind}/create"), post(not_manager))
            .route(
                &format!("/{kind}/{{id}}"),
                get(not_manager).delete(not_manager),
            )
            .route(&format!("/{kind}/{{id}}/update"), post(not_manager));
    }
    r
}

/// berth's answer to `swarm init` and `swarm join` (dockerd would become a swarm node).
pub const NO_SWARM_MODE: &str = "berth does not implement swarm mode: this node cannot \
     initialize or join a swarm (berth's networks are local to this host)";

/// Every error answer is Docker's JSON body: errors that do not come from a handler (a body
/// too large, a path or query that does not decode) are plain text from axum, turned into
/// `{"message": …}` here.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return res;
    }
    let text = match axum::body::to_bytes(res.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        // axum says only "length limit exceeded".
        format!(
            "request body larger than {} MiB, berthd's limit for one API request (it bounds the \
             memory one client can make berthd hold; no Docker API call needs more): send a \
             smaller body",
            BODY_LIMIT / (1024 * 1024)
        )
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    ApiError { status, message }.into_response()
}

/// Headers every dockerd response carries; the docker CLI reads `Api-Version` to pick the
/// version prefix of its next requests.
async fn docker_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        "Api-Version",
        HeaderValue::from_static(berth_api::API_VERSION),
    );
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    res
}

/// Strips Docker's `/vX.Y` prefix so one route table serves both forms.
fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            let ver = &rest[..slash];
            if !ver.is_empty() && ver.chars().all(|c| c.is_ascii_digit() || c == '.') {
                let new_path = rest[slash..].to_string();
                let pq = match req.uri().query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}

/// Serves the API on `socket` until SIGINT/SIGTERM.
pub async fn serve(
    d: Arc<Daemon>,
    socket: &Path,
    latency: Arc<berth_kernel::cpu_latency::CpuLatency>,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            anyhow::bail!(
                "another berthd is already serving {}; stop it first or use --socket",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    // 0660 root:berth (if that group exists), like docker.sock and the docker group.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", socket.display()))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("berth") {
        let _ = nix::unistd::chown(socket, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid));
    }
    tracing::info!(socket = %socket.display(), "berthd listening");
    let app = router(d).layer(axum::middleware::from_fn_with_state(
        latency,
        awake_while_answering,
    ));
    let app = tower::util::MapRequestLayer::new(strip_version).layer(app);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down (containers keep running; the next berthd adopts them)");
    };
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving the API")?;
    let _ = std::fs::remove_file(socket);
    Ok(())
}

// ------------------------------------------------------------------ system

async fn ping() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "OK",
    )
}

async fn version() -> Json<VersionResponse> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Json(VersionResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: berth_api::API_VERSION.into(),
        min_api_version: berth_api::MIN_API_VERSION.into(),
        os: "linux".into(),
        arch: std::env::consts::ARCH.replace("x86_64", "amd64"),
        kernel_version: kernel,
        components: vec![Component {
            name: "berthd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }],
    })
}

async fn info(State(d): D) -> ApiResult<Json<InfoResponse>> {
    let containers = d.containers()?;
    let running_ids = crate::capacity::running_ids(&d, &containers);
    let running = running_ids.len();
    let meta = d.meta.lock().map(|m| m.clone()).unwrap_or_default();
    let host = crate::sysinfo::HostInfo::read();
    let (cap_nets, conntrack) = crate::capacity::snapshot_of(&d, &containers, &running_ids)?;
    let state_dir = d.config.state_dir.display().to_string();
    Ok(Json(InfoResponse {
        id: meta.id,
        containers: containers.len(),
        containers_running: running,
        containers_paused: 0,
        containers_stopped: containers.len() - running,
        images: 0,
        driver: "none".into(),
        logging_driver: "berth-file".into(),
        plugins: PluginsInfo {
            volume: vec![],
            network: ["bridge", "host", "ipvlan", "macvlan", "null"]
                .map(String::from)
                .to_vec(),
            authorization: None,
            log: vec!["berth-file".into()],
        },
        swarm: SwarmInfo {
            local_node_state: "inactive".into(),
            ..SwarmInfo::default()
        },
        ncpu: host.ncpu,
        mem_total: host.mem_total,
        name: host.name,
        operating_system: host.operating_system,
        os_type: "linux".into(),
        architecture: host.architecture,
        kernel_version: host.kernel_version,
        docker_root_dir: state_dir.clone(),
        live_restore_enabled: true,
        init_binary: "berthd".into(),
        // What every container gets unless loosened (docs/SECURITY.md).
        security_options: vec![
            "name=seccomp,profile=builtin".into(),
            "name=no-new-privileges".into(),
        ],
        default_address_pools: berth_plan::ipam::default_pools()
            .into_iter()
            .map(|(base, size)| AddressPool {
                base: base.to_string(),
                size,
            })
            .collect(),
        debug: false,
        experimental_build: false,
        networks: d.networks()?.len(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        state_dir,
        store: d.store.describe(),
        // The docker CLI prints warnings as they come; dockerd's start with "WARNING: ".
        // What is nearly full comes after berthd's own warnings.
        warnings: d
            .warnings
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(berth_plan::capacity::warnings(&cap_nets, conntrack))
            .map(|w| {
                if w.starts_with("WARNING") {
                    w
                } else {
                    format!("WARNING: {w}")
                }
            })
            .collect(),
        ip_forward_enabled_by_berth: meta.ipv4_forwarding_was_off,
        dns: d.dns.info(),
        reconciler: d.reconciler.stats(),
        cluster_store: d
            .cluster
            .as_ref()
            .map(|c| c.url.clone())
            .unwrap_or_default(),
        cluster_advertise: d
            .cluster
            .as_ref()
            .map(|c| c.record.addr.to_string())
            .unwrap_or_default(),
        cluster: match d.cluster.clone() {
            // Reads etcd: off the runtime's workers.
            Some(c) => tokio::task::spawn_blocking(move || c.info()).await.ok(),
            None => None,
        },
        capacity: crate::capacity::info(&cap_nets, conntrack),
    }))
}

/// `GET /cluster/nodes`: the live hosts of this host's cluster (`berth node ls`).
async fn cluster_nodes(State(d): D) -> ApiResult<Json<Vec<berth_api::types::NodeSummary>>> {
    let Some(c) = d.cluster.clone() else {
        return Err(ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: "this berthd is not part of a cluster: start it with --cluster-store \
                      etcd://HOST:2379 --advertise-addr IP|IFACE"
                .into(),
        });
    };
    let nodes = tokio::task::spawn_blocking(move || c.nodes())
        .await
        .map_err(|e| ApiError::internal(format!("listing nodes: {e}")))??;
    Ok(Json(nodes))
}

/// `GET /system/check`: desired vs observed and the steps a pass would take (dry run).
async fn system_check(State(d): D) -> ApiResult<Json<SystemCheck>> {
    Ok(Json(d.check().await?))
}

/// `GET /system/topology`: networks, devices, veths, containers as observed, drift marked.
async fn system_topology(State(d): D) -> ApiResult<Json<Topology>> {
    Ok(Json(d.topology().await?))
}

/// `POST /system/trace`: an `application/x-ndjson` stream of [`TraceEvent`]s: progress lines
/// (and empty keep-alives) while the trace runs, then the journey or an error. Bad requests and
/// unknown names are answered before the stream starts. A client that goes away ends the trace
/// (its table is removed at the next keep-alive).
async fn system_trace(State(d): D, body: Bytes) -> ApiResult<Response> {
    let req: TraceRequest = parse_body(&body, "trace")?;
    let spec = d.trace_spec(&req)?;
    Ok(progress_stream(
        8,
        move |ptx| async move { d.trace(spec, ptx).await },
        |p| TraceEvent {
            progress: Some(p),
            ..TraceEvent::default()
        },
        |res| match res {
            Ok(j) => TraceEvent {
                journey: serde_json::to_value(&j).ok(),
                ..TraceEvent::default()
            },
            Err(e) => TraceEvent {
                error: Some(e.message),
                ..TraceEvent::default()
            },
        },
    ))
}

/// An `application/x-ndjson` answer for long work: `work` gets a progress sender; each progress
/// message becomes a line (`progress_line`), then the result (`result_line`). Once the client
/// is gone, writing a line fails, the forwarder ends and with it the progress receiver: the
/// work sees its sender closed and may stop.
fn progress_stream<T, E, W, Fut>(
    buffer: usize,
    work: W,
    progress_line: fn(String) -> E,
    result_line: fn(ApiResult<T>) -> E,
) -> Response
where
    T: Send + 'static,
    E: Serialize + Send + 'static,
    W: FnOnce(mpsc::Sender<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiResult<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (ptx, mut prx) = mpsc::channel::<String>(buffer);
    fn line<E: Serialize>(e: &E) -> Bytes {
        let mut v = serde_json::to_vec(e).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
    tokio::spawn(async move {
        let fwd_tx = tx.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(p) = prx.recv().await {
                if fwd_tx.send(line(&progress_line(p))).await.is_err() {
                    return;
                }
            }
        });
        let res = work(ptx).await;
        // Every progress sender is gone with the work: the forwarder ends after its last line.
        let _ = forwarder.await;
        let _ = tx.send(line(&result_line(res))).await;
    });
    stream_body(rx, "application/x-ndjson")
}

#[derive(Deserialize)]
struct ExplainQuery {
    verify: Option<String>,
}

/// `GET /containers/{id}/explain[?verify=1]`: the exposure as JSON; with `verify`, an
/// `application/x-ndjson` stream of [`ExplainEvent`]s (progress lines while the probes run,
/// then the report), so a long verification shows progress.
async fn explain(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ExplainQuery>,
) -> ApiResult<Response> {
    if !truthy(&q.verify, false) {
        return Ok(Json(d.explain(&id, false, None).await?).into_response());
    }
    // Unknown containers are a plain 404, before the stream starts.
    d.find_container(&id)?;
    Ok(progress_stream(
        64,
        move |ptx| async move { d.explain(&id, true, Some(ptx)).await },
        |p| ExplainEvent {
            progress: Some(p),
            ..ExplainEvent::default()
        },
        |res| match res {
            Ok(x) => ExplainEvent {
                exposure: Some(x),
                ..ExplainEvent::default()
            },
            Err(e) => ExplainEvent {
                error: Some(e.message),
                ..ExplainEvent::default()
            },
        },
    ))
}

/// `GET /metrics`: Prometheus text format (the embedded DNS resolver's counters and latency).
async fn metrics(State(d): D) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        format!(
            "{}{}{}",
            d.dns.metrics(),
            crate::reconcile::metrics(&d.reconciler.stats()),
            match crate::capacity::snapshot(&d) {
                Ok((nets, conntrack)) => berth_plan::capacity::metrics(&nets, conntrack),
                Err(e) => {
                    tracing::warn!("capacity metrics: {}", e.message);
                    String::new()
                }
            }
        ),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

// ------------------------------------------------------------------ networks

/// Docker's `filters` query parameter: `{"key":{"value":true}}` (or the older `{"key":["v"]}`).
fn parse_filters(raw: Option<&str>) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters {raw:?}: {e}")))?;
    let mut out = BTreeMap::new();
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request(format!("invalid filters {raw:?}: not an object")))?;
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(false))
                .map(|(s, _)| s.clone())
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter {k:?}: expected an object or a list"
                )))
            }
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

/// Decodes a JSON request body as dockerd's Go decoder would (an empty body is `{}`, `null`
/// members are absent: [`berth_api::gojson`]); bad JSON is the client's error (400), named by
/// `what`.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8], what: &str) -> ApiResult<T> {
    berth_api::gojson::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid {what} request: {e}")))
}

#[derive(Deserialize)]
struct FiltersQuery {
    filters: Option<String>,
}

/// The hosts with endpoints on overlay network `n` (from the cluster's published endpoints).
fn peers_of(d: &Daemon, n: &NetworkSpec) -> Option<Vec<berth_api::types::PeerInfo>> {
    if n.driver != berth_plan::model::Driver::Overlay {
        return None;
    }
    let cl = d.cluster.as_ref()?;
    let peers: BTreeMap<String, String> = cl
        .remote_endpoints()
        .into_iter()
        .filter(|e| e.network_id == n.id)
        .map(|e| (e.node, e.vtep.to_string()))
        .collect();
    Some(
        peers
            .into_iter()
            .map(|(name, ip)| berth_api::types::PeerInfo { name, ip })
            .collect(),
    )
}

fn network_resource(d: &Daemon, n: &NetworkSpec, containers: &[ContainerSpec]) -> NetworkResource {
    let mut options = n.options.clone();
    if let Some(ov) = n.overlay {
        // Docker shows the VXLAN id the network got.
        options
            .entry(berth_plan::network::OPT_VXLANID.to_string())
            .or_insert_with(|| ov.vni.to_string());
        // The MTU in effect (decided from the underlay unless given).
        options
            .entry(berth_plan::network::OPT_MTU.to_string())
            .or_insert_with(|| {
                let underlay = d.cluster.as_ref().and_then(|c| c.live_underlay());
                berth_plan::network::overlay_mtu_now(n, underlay).to_string()
            });
    }
    let mut members = BTreeMap::new();
    for c in containers {
        for ep in c.endpoints.iter().filter(|e| e.network_id == n.id) {
            let v4 = ep.addrs.iter().find(|a| a.addr().is_ipv4());
            let v6 = ep.addrs.iter().find(|a| a.addr().is_ipv6());
            members.insert(
                c.id.clone(),
                NetworkContainer {
                    name: c.name.clone(),
                    endpoint_id: ep.id.clone(),
                    mac_address: ep.mac.clone(),
                    ipv4_address: v4.map(|a| a.to_string()).unwrap_or_default(),
                    ipv6_address: v6.map(|a| a.to_string()).unwrap_or_default(),
                },
            );
        }
    }
    let mut config: Vec<IpamConfig> = n
        .subnets
        .iter()
        .map(|s| IpamConfig {
            subnet: s.subnet.to_string(),
            ip_range: s.ip_range.map(|r| r.to_string()).unwrap_or_default(),
            gateway: s.gateway.to_string(),
            aux_addresses: (!s.aux_addresses.is_empty()).then(|| {
                s.aux_addresses
                    .iter()
                    .map(|(k, a)| (k.clone(), a.to_string()))
                    .collect()
            }),
        })
        .collect();
    // Pools kept but not in use (an IPv6 pool without IPv6), shown as given, like moby 27.
    config.extend(n.unused_ipam.iter().map(|p| IpamConfig {
        subnet: p.subnet.clone(),
        ip_range: p.ip_range.clone(),
        gateway: p.gateway.clone(),
        aux_addresses: (!p.aux_addresses.is_empty()).then(|| p.aux_addresses.clone()),
    }));
    NetworkResource {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        scope: n.driver.scope().into(),
        driver: n.driver.as_str().into(),
        enable_ipv4: !matches!(
            n.driver,
            berth_plan::model::Driver::Host | berth_plan::model::Driver::Null
        ),
        enable_ipv6: n.enable_ipv6,
        ipam: Ipam {
            driver: "default".into(),
            options: n.ipam_options.clone(),
            config: Some(config),
        },
        internal: n.internal,
        attachable: n.attachable,
        ingress: false,
        config_from: ConfigReference::default(),
        config_only: false,
        containers: members,
        options,
        labels: n.labels.clone(),
        berth_notes: planner::notes(n),
        peers: peers_of(d, n),
    }
}

async fn list_networks(
    State(d): D,
    Query(q): Query<FiltersQuery>,
) -> ApiResult<Json<Vec<NetworkResource>>> {
    let filters = parse_filters(q.filters.as_deref())?;
    let nets = d.networks()?;
    let containers = d.containers()?;
    let in_use: std::collections::BTreeSet<String> = containers
        .iter()
        .flat_map(|c| c.endpoints.iter().map(|e| e.network_id.clone()))
        .collect();
    let selected = berth_plan::network::filter_networks(&nets, &filters, &in_use)?;
    Ok(Json(
        selected
            .into_iter()
            .map(|n| network_resource(&d, n, &containers))
            .collect(),
    ))
}

async fn inspect_network(
    State(d): D,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<NetworkResource>> {
    let n = d.find_network(&id)?;
    Ok(Json(network_resource(&d, &n, &d.containers()?)))
}

/// Refuses what berth cannot make of a create request, with the reason: swarm and global
/// scopes, ingress, configuration-only networks and `ConfigFrom`, IPv6-only networks, IPAM
/// drivers other than `default`.
fn check_create_request(d: &Daemon, req: &NetworkCreateRequest) -> ApiResult<()> {
    match req.scope.as_str() {
        "" | "local" => {}
        "swarm" => {
            return Err(ApiError::bad_request(
                "cannot create a swarm scoped network when swarm is not active: berth does not \
                 implement swarm mode; create a local network (leave --scope out, or use \
                 --scope local)",
            ))
        }
        "global" => {
            return Err(ApiError::bad_request(
                "cannot create a global scoped network: it needs a cluster store shared by the \
                 hosts, which berth does not have yet (global networks will come with the \
                 overlay driver); create a local network (leave --scope out, or use --scope \
                 local)",
            ))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid scope {other:?}: berth networks are local (the scopes are local, \
                 swarm and global)"
            )))
        }
    }
    if req.ingress || req.config_only {
        return Err(ApiError::bad_request(
            "ingress and config-only networks are swarm features; berth does not support them",
        ));
    }
    if let Some(from) = req.config_from.as_ref().filter(|c| !c.network.is_empty()) {
        // dockerd looks for a configuration-only network of that name; berth has none.
        return Err(match d.find_network(&from.network) {
            Ok(n) => ApiError::bad_request(format!(
                "network {:?} is not a configuration-only network, so --config-from cannot \
                 use it (berth does not support --config-only networks)",
                n.name
            )),
            Err(_) => ApiError::not_found(format!(
                "configuration network {:?} does not exist",
                from.network
            )),
        });
    }
    if req.enable_ipv4 == Some(false) {
        return Err(ApiError::bad_request(
            "berth does not support IPv6-only networks (EnableIPv4: false); every berth \
             network has an IPv4 subnet",
        ));
    }
    if let Some(drv) = req.ipam.as_ref().map(|i| i.driver.as_str()) {
        if !drv.is_empty() && drv != "default" {
            return Err(ApiError::bad_request(format!(
                "IPAM driver {drv:?} is not supported (berth supports: default)"
            )));
        }
    }
    Ok(())
}

async fn create_network(State(d): D, body: Bytes) -> ApiResult<Response> {
    let req: NetworkCreateRequest = parse_body(&body, "network create")?;
    check_create_request(&d, &req)?;
    let ipam = req.ipam.unwrap_or_default();
    let options = req.options.unwrap_or_default();
    let plan_req = NetworkRequest {
        name: req.name,
        driver: Some(req.driver).filter(|d| !d.is_empty()),
        ipam: ipam
            .config
            .unwrap_or_default()
            .into_iter()
            .map(|c| IpamRequest {
                subnet: Some(c.subnet).filter(|s| !s.is_empty()),
                gateway: Some(c.gateway).filter(|s| !s.is_empty()),
                ip_range: Some(c.ip_range).filter(|s| !s.is_empty()),
                aux_addresses: c.aux_addresses.unwrap_or_default(),
            })
            .collect(),
        enable_ipv6: planner::enable_ipv6(req.enable_ipv6, &options)?,
        internal: req.internal,
        attachable: req.attachable,
        labels: req.labels.unwrap_or_default(),
        options,
        ipam_options: ipam.options,
    };
    let spec = d.create_network(plan_req).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreateResponse {
            warning: planner::create_warnings(&spec).join("\n"),
            id: spec.id,
        }),
    )
        .into_response())
}

async fn remove_network(State(d): D, UrlPath(id): UrlPath<String>) -> ApiResult<StatusCode> {
    d.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune_networks(
    State(d): D,
    Query(q): Query<FiltersQuery>,
) -> ApiResult<Json<NetworkPruneResponse>> {
    let filters = parse_filters(q.filters.as_deref())?;
    let removed = d.prune_networks(&filters).await?;
    Ok(Json(NetworkPruneResponse {
        networks_deleted: removed,
    }))
}

async fn connect(State(d): D, UrlPath(id): UrlPath<String>, body: Bytes) -> ApiResult<StatusCode> {
    let req: NetworkConnectRequest = parse_body(&body, "connect")?;
    d.connect(
        &id,
        &req.container,
        endpoint_request(req.endpoint_config.as_ref())?,
    )
    .await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: NetworkDisconnectRequest = parse_body(&body, "disconnect")?;
    d.disconnect(&id, &req.container).await?;
    Ok(StatusCode::OK)
}

// ------------------------------------------------------------------ containers

#[derive(Deserialize)]
struct NameQuery {
    name: Option<String>,
    /// berth's own: start the container in the same request (`berth run -d`), see below.
    start: Option<String>,
    /// berth's own, with `start`: stream its output and exit in the answer (`berth run`).
    attach: Option<String>,
}

/// `POST /containers/create[?name=…]`. berth's `start=1` (sent by `berth run -d`; Docker
/// clients never send it) also starts the container, as a `start` request right after
/// would, and publishes its overlay endpoints to the cluster with its address claims: the
/// other hosts resolve its name one etcd commit after its address is chosen. A start that
/// fails is answered with its error and leaves the container created (removed if
/// `AutoRemove`), as `docker run -d` does, and withdraws what was published.
async fn create_container(
    State(d): D,
    Query(q): Query<NameQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ContainerCreateRequest = parse_body(&body, "container create")?;
    let started = truthy(&q.start, false);
    let attach = started && truthy(&q.attach, false);
    let id = if started {
        // On a task of its own: a client that goes away mid-request must not cancel it
        // between the create (its endpoints published with the claims) and the end of the
        // start, which settles that publication.
        let d = d.clone();
        let (id, attached) =
            tokio::spawn(async move { create_and_start(&d, q.name, req, attach).await })
                .await
                .map_err(|e| ApiError::internal(format!("creating and starting: {e}")))??;
        if let Some((logs, exit)) = attached {
            return Ok(attached_body(id, logs, exit));
        }
        id
    } else {
        create_prepared(&d, q.name, req, false).await?.id
    };
    Ok((
        StatusCode::CREATED,
        Json(ContainerCreateResponse {
            id,
            warnings: vec![],
            berth_started: started,
        }),
    )
        .into_response())
}

/// Creates the container (`announce`: its overlay endpoints published with its claims) and
/// its log files, so a client can follow them before it starts.
async fn create_prepared(
    d: &Arc<Daemon>,
    name: Option<String>,
    req: ContainerCreateRequest,
    announce: bool,
) -> ApiResult<ContainerSpec> {
    let spec = d.create_container(name, req, announce).await?;
    let dir = d.runtime.container_dir(&spec.id);
    let _ = std::fs::create_dir_all(&dir);
    for f in ["stdout.log", "stderr.log"] {
        let _ = crate::runtime::log_file(&dir.join(f));
    }
    d.exit_channel(&spec.id);
    Ok(spec)
}

/// A container's output (its log stream, followed) and its exit, taken before its start.
type Attached = (mpsc::Receiver<Bytes>, watch::Receiver<Option<i32>>);

/// `start=1`: create, then start as a `start` request would. A start that fails withdraws
/// what the create published and, with `AutoRemove`, removes the container (it never ran,
/// so no exit removes it: what the CLI does after a failed start without `start=1`).
/// `attach`: its output and exit are followed from before the start (see [`attached_body`]).
///
/// The create's commit is not flushed on its own (see `create_container`): the start's commit
/// flushes it, and a failed start flushes it before the error is answered, so every answer
/// still stands on disk. A crash before that answers nobody; the start-up then finds either
/// the stored container (created, or running and adopted) or none, and ends a process started
/// for one it does not have (`converge.rs`).
async fn create_and_start(
    d: &Arc<Daemon>,
    name: Option<String>,
    req: ContainerCreateRequest,
    attach: bool,
) -> ApiResult<(String, Option<Attached>)> {
    let spec = create_prepared(d, name, req, true).await?;
    // Subscribed before the start: its exit cannot come first.
    let attached = attach.then(|| {
        let exit = d.exit_channel(&spec.id).subscribe();
        let opts = crate::runtime::LogOptions {
            follow: true,
            stdout: true,
            stderr: true,
            tail: None,
            timestamps: false,
        };
        let logs = d
            .runtime
            .logs(&spec.id, opts, d.exit_channel(&spec.id).subscribe(), true);
        (logs, exit)
    });
    if let Err(e) = d.start_container(&spec.id).await {
        // Withdrawn unless it runs (a no-op when the start's own failure path did it).
        d.end_announcement(&spec.id, None, true).await;
        if spec.auto_remove {
            if let Err(r) = d.remove_container(&spec.id, true).await {
                tracing::warn!(container = %spec.name, "removing it after its start failed: {}", r.message);
            }
        }
        // The answer says it was created (or removed): on disk before it goes out.
        if let Err(s) = d.sync_store().await {
            tracing::warn!(container = %spec.name, "flushing its create: {}", s.message);
        }
        return Err(e);
    }
    Ok((spec.id, attached))
}

/// The answer to `create?start=1&attach=1` (`berth run` without `-d`, `-i`, `-t`): one
/// request instead of create, logs, wait and start. Docker's multiplexed stream, framed by
/// two frames of berth's own: first [`stream::CREATED`] (the create's answer), then the
/// container's output as `logs?follow=1` gives it, then [`stream::EXITED`] (its exit code,
/// as `wait` gives it) once the output is complete.
fn attached_body(
    id: String,
    mut logs: mpsc::Receiver<Bytes>,
    mut exit: watch::Receiver<Option<i32>>,
) -> Response {
    use berth_api::types::stream;
    let (tx, body) = mpsc::channel(16);
    tokio::spawn(async move {
        let created = ContainerCreateResponse {
            id,
            warnings: vec![],
            berth_started: true,
        };
        let Ok(json) = serde_json::to_vec(&created) else {
            return;
        };
        if tx
            .send(Bytes::from(stream::frame(stream::CREATED, &json)))
            .await
            .is_err()
        {
            return;
        }
        while let Some(chunk) = logs.recv().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        // The log stream ends once the container exited; its code is in the channel by then
        // (told before the removal of a `--rm` container).
        let answer = exit_answer(&mut exit).await;
        if let Ok(json) = serde_json::to_vec(&answer) {
            let _ = tx
                .send(Bytes::from(stream::frame(stream::EXITED, &json)))
                .await;
        }
    });
    stream_body(body, "application/vnd.docker.multiplexed-stream")
}

async fn start_container(State(d): D, UrlPath(id): UrlPath<String>) -> ApiResult<StatusCode> {
    d.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct StopQuery {
    t: Option<u64>,
}

async fn stop_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    d.stop_container(&id, q.t.unwrap_or(10)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/restart?t=`: as dockerd, a stop (SIGTERM, SIGKILL after `t`
/// seconds) then a start; a container that is not running is just started.
async fn restart_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    d.stop_container(&id, q.t.unwrap_or(10)).await?;
    d.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update` (`docker update`): the restart policy. berth limits no
/// resources: a resource field the client set to something (the docker CLI sends them all,
/// zero) is refused rather than ignored.
async fn update_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<Json<berth_api::types::ContainerUpdateResponse>> {
    let raw: serde_json::Value = parse_body(&body, "container update")?;
    if let Some(obj) = raw.as_object() {
        let set = |v: &serde_json::Value| match v {
            serde_json::Value::Null => false,
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            serde_json::Value::Object(o) => !o.is_empty(),
        };
        if let Some((k, _)) = obj
            .iter()
            .find(|(k, v)| k.as_str() != "RestartPolicy" && set(v))
        {
            return Err(ApiError::bad_request(format!(
                "{k}: berth does not limit a container's resources; only the restart policy can be updated"
            )));
        }
    }
    let req: berth_api::types::ContainerUpdateRequest = parse_body(&body, "container update")?;
    if let Some(rp) = req.restart_policy.filter(|rp| !rp.name.is_empty()) {
        d.update_restart_policy(&id, &rp.name, rp.maximum_retry_count)
            .await?;
    } else {
        // Still a 404 for a container that does not exist.
        d.find_container(&id)?;
    }
    Ok(Json(berth_api::types::ContainerUpdateResponse::default()))
}

#[derive(Deserialize)]
struct KillQuery {
    signal: Option<String>,
}

async fn kill_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<KillQuery>,
) -> ApiResult<StatusCode> {
    d.kill_container(&id, q.signal.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct WaitQuery {
    condition: Option<String>,
}

async fn wait_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    // `next-exit` (docker start -a, docker run): an exited container is waited for again.
    let next_exit = q.condition.as_deref() == Some("next-exit");
    // A restarting container counts as running (dockerd): its last exit, still in the
    // channel, is not the one waited for; the next change is the restarted run or the
    // restart's cancellation.
    //
    // An exited container's last exit is still in the channel too, and with `next-exit` it is
    // not the one waited for either. Both wait for a change first: the receiver has seen the
    // channel's value as of its subscription, and any later change of an exited or restarting
    // container's channel is a start (or a cancelled restart), so the first exit code present
    // after a change is the next run's — even when the start and the exit both came before
    // this task ran. That wait happens after the head is sent: a client that waits for the
    // head before it sends the start (the docker CLI, `berth start -a`) must get it first.
    let mut skip_last_exit = false;
    // A `--rm` container may be gone already: its exit code stays known by full id.
    let mut rx = match d.find_container(&id) {
        Ok(c) => {
            // Subscribed before the state is read: a start and exit in between are then a
            // change this receiver has not seen, never one it missed.
            let rx = d.exit_channel(&c.id).subscribe();
            let st = d.state(&c.id)?;
            if st.status == Status::Exited && !next_exit {
                return Ok(Json(WaitResponse {
                    status_code: st.exit_code as i64,
                })
                .into_response());
            }
            skip_last_exit =
                st.status == Status::Restarting || (next_exit && st.status == Status::Exited);
            rx
        }
        Err(e) => {
            let known = d
                .exits
                .lock()
                .ok()
                .and_then(|m| m.get(&id).map(|s| s.subscribe()));
            match known {
                Some(rx) => rx,
                None => return Err(e),
            }
        }
    };
    // As dockerd: the answer's head goes out at once (the docker CLI waits for it before it
    // starts the container), the JSON when the container exits.
    let (tx, body) = mpsc::channel(1);
    tokio::spawn(async move {
        if skip_last_exit {
            let _ = rx.changed().await;
        }
        let answer = exit_answer(&mut rx).await;
        if let Ok(mut json) = serde_json::to_vec(&answer) {
            json.push(b'\n');
            let _ = tx.send(Bytes::from(json)).await;
        }
    });
    Ok(stream_body(body, "application/json"))
}

/// The exit code the channel holds, or the next one told (-1 if it can no longer come).
async fn exit_answer(rx: &mut watch::Receiver<Option<i32>>) -> WaitResponse {
    let code = rx
        .wait_for(|v| v.is_some())
        .await
        .map(|v| v.unwrap_or(-1))
        .unwrap_or(-1);
    WaitResponse {
        status_code: code as i64,
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    /// A count of last lines, or `all`.
    tail: Option<String>,
    timestamps: Option<String>,
}

fn truthy(v: &Option<String>, default: bool) -> bool {
    match v.as_deref() {
        None => default,
        Some(s) => matches!(s, "1" | "true" | "True" | "yes"),
    }
}

fn stream_body(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn logs(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let c = d.find_container(&id)?;
    let st = d.state(&c.id)?;
    let follow = truthy(&q.follow, false);
    let (out, err) = (truthy(&q.stdout, true), truthy(&q.stderr, true));
    let opts = crate::runtime::LogOptions {
        follow,
        stdout: out,
        stderr: err,
        tail: crate::logtimes::parse_tail(q.tail.as_deref()),
        timestamps: truthy(&q.timestamps, false),
    };
    let rx = d.runtime.logs(
        &c.id,
        opts,
        d.exit_channel(&c.id).subscribe(),
        st.status != Status::Exited,
    );
    Ok(stream_body(rx, "application/vnd.docker.multiplexed-stream"))
}

#[derive(Deserialize)]
struct RemoveQuery {
    force: Option<String>,
}

async fn remove_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    d.remove_container(&id, truthy(&q.force, false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    all: Option<String>,
    filters: Option<String>,
}

fn endpoint_settings(
    c: &ContainerSpec,
    nets: &[NetworkSpec],
) -> BTreeMap<String, EndpointSettings> {
    let mut out = BTreeMap::new();
    for ep in &c.endpoints {
        let Some(n) = nets.iter().find(|n| n.id == ep.network_id) else {
            continue;
        };
        let v4 = ep.addrs.iter().find(|a| a.addr().is_ipv4());
        let v6 = ep.addrs.iter().find(|a| a.addr().is_ipv6());
        let gw4 = n
            .subnets
            .iter()
            .find(|s| s.subnet.addr().is_ipv4())
            .map(|s| s.gateway);
        let gw6 = n
            .subnets
            .iter()
            .find(|s| s.subnet.addr().is_ipv6())
            .map(|s| s.gateway);
        let mut dns_names = vec![c.name.clone()];
        dns_names.extend(ep.aliases.iter().cloned());
        dns_names.push(berth_plan::names::short_id(&c.id).to_string());
        out.insert(
            n.name.clone(),
            EndpointSettings {
                ipam_config: if ep.static_ipv4.is_some()
                    || ep.static_ipv6.is_some()
                    || !ep.link_local_ips.is_empty()
                {
                    Some(EndpointIpamConfig {
                        ipv4_address: ep.static_ipv4.map(|a| a.to_string()),
                        ipv6_address: ep.static_ipv6.map(|a| a.to_string()),
                        link_local_ips: (!ep.link_local_ips.is_empty())
                            .then(|| ep.link_local_ips.iter().map(|a| a.to_string()).collect()),
                    })
                } else {
                    None
                },
                links: (!ep.links.is_empty()).then(|| ep.links.clone()),
                aliases: if ep.aliases.is_empty() {
                    None
                } else {
                    Some(ep.aliases.clone())
                },
                mac_address: ep.mac.clone(),
                driver_opts: if ep.driver_opts.is_empty() {
                    None
                } else {
                    Some(ep.driver_opts.clone())
                },
                gw_priority: ep.gw_priority,
                network_id: n.id.clone(),
                endpoint_id: ep.id.clone(),
                gateway: gw4.map(|g| g.to_string()).unwrap_or_default(),
                ip_address: v4.map(|a| a.addr().to_string()).unwrap_or_default(),
                ip_prefix_len: v4.map(|a| a.prefix_len()).unwrap_or(0),
                ipv6_gateway: gw6.map(|g| g.to_string()).unwrap_or_default(),
                global_ipv6_address: v6.map(|a| a.addr().to_string()).unwrap_or_default(),
                global_ipv6_prefix_len: v6.map(|a| a.prefix_len()).unwrap_or(0),
                dns_names: if berth_plan::dns::serves(n) {
                    Some(dns_names)
                } else {
                    None
                },
            },
        );
    }
    out
}

fn network_mode_view(c: &ContainerSpec, nets: &[NetworkSpec]) -> String {
    match &c.mode {
        NetworkMode::Networks => c
            .endpoints
            .first()
            .and_then(|e| nets.iter().find(|n| n.id == e.network_id))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| "bridge".into()),
        m => mode_name(m),
    }
}

fn inspect_view(
    d: &Daemon,
    c: &ContainerSpec,
    st: &ContainerState,
    nets: &[NetworkSpec],
) -> ContainerInspect {
    let dir = d.runtime.container_dir(&c.id);
    let ports_doc = crate::ports::doc(d, &c.id).unwrap_or_default();
    let networks = endpoint_settings(c, nets);
    let gw_net = berth_plan::network::gateway_endpoint(c, nets)
        .and_then(|e| nets.iter().find(|n| n.id == e.network_id))
        .map(|n| n.name.clone());
    let primary = gw_net
        .and_then(|n| networks.get(&n).cloned())
        .unwrap_or_default();
    ContainerInspect {
        id: c.id.clone(),
        name: format!("/{}", c.name),
        created: c.created.clone(),
        path: c.cmd.first().cloned().unwrap_or_default(),
        args: c.cmd.iter().skip(1).cloned().collect(),
        state: ContainerStateView {
            status: st.status.as_str().to_string(),
            // dockerd counts a restarting container as running (with no pid).
            running: matches!(st.status, Status::Running | Status::Restarting),
            restarting: st.status == Status::Restarting,
            pid: st.pid,
            exit_code: st.exit_code,
            started_at: st.started_at.clone(),
            finished_at: st.finished_at.clone(),
        },
        restart_count: st.restart.count,
        resolv_conf_path: dir.join("resolv.conf").display().to_string(),
        hostname_path: dir.join("hostname").display().to_string(),
        hosts_path: dir.join("hosts").display().to_string(),
        log_path: dir.display().to_string(),
        config: ContainerConfigView {
            hostname: c.hostname.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone(),
            tty: c.stdio.tty,
            open_stdin: c.stdio.open_stdin,
            stdin_once: c.stdio.stdin_once,
            working_dir: c.process.working_dir.clone(),
            user: c.process.user.clone(),
            labels: c.process.labels.clone(),
        },
        host_config: crate::security::host_config_view(
            HostConfig {
                network_mode: network_mode_view(c, nets),
                dns: c.dns.iter().map(|a| a.to_string()).collect(),
                dns_search: c.dns_search.clone(),
                dns_options: c.dns_options.clone(),
                extra_hosts: c
                    .extra_hosts
                    .iter()
                    .map(|(h, a)| format!("{h}:{a}"))
                    .collect(),
                // moby's shape: `/CHILD:/PARENT/ALIAS`, for the linked containers that exist.
                links: c
                    .legacy_links
                    .iter()
                    .filter_map(|l| {
                        let child = d.find_container(&l.child).ok()?;
                        Some(format!("/{}:/{}/{}", child.name, c.name, l.alias))
                    })
                    .collect(),
                auto_remove: c.auto_remove,
                sysctls: c.process.sysctls.clone(),
                restart_policy: {
                    let (name, n) = c.restart.docker_name();
                    berth_api::types::RestartPolicy {
                        name: name.to_string(),
                        maximum_retry_count: i64::from(n),
                    }
                },
                port_bindings: crate::ports::bindings_view(&ports_doc.specs),
                ..HostConfig::default()
            },
            &c.security,
        ),
        network_settings: NetworkSettings {
            sandbox_key: if st.status == Status::Running && c.mode != NetworkMode::Host {
                format!("/proc/{}/ns/net", st.pid)
            } else {
                String::new()
            },
            ip_address: primary.ip_address.clone(),
            ip_prefix_len: primary.ip_prefix_len,
            gateway: primary.gateway.clone(),
            mac_address: primary.mac_address.clone(),
            ports: crate::ports::ports_view(&ports_doc.specs, &ports_doc.published),
            networks,
        },
        rootfs: c.rootfs.clone(),
    }
}

async fn inspect_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<ContainerInspect>> {
    let c = d.find_container(&id)?;
    let st = d.state(&c.id)?;
    let nets = d.networks()?;
    Ok(Json(inspect_view(&d, &c, &st, &nets)))
}

async fn list_containers(
    State(d): D,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    let all = truthy(&q.all, false);
    let filters = parse_filters(q.filters.as_deref())?;
    let nets = d.networks()?;
    let mut out = Vec::new();
    let mut cs = d.containers()?;
    cs.sort_by(|a, b| b.created.cmp(&a.created));
    let states = cs
        .iter()
        .map(|c| d.state(&c.id))
        .collect::<ApiResult<Vec<_>>>()?;
    let pairs: Vec<_> = cs.iter().zip(states.iter()).collect();
    let names = nets
        .iter()
        .map(|n| (n.id.clone(), n.name.clone()))
        .collect();
    let listed = berth_plan::ps::filter_containers(&pairs, all, &filters, &names)?;
    for (c, st) in pairs {
        if !listed.iter().any(|l| l.id == c.id) {
            continue;
        }
        let created =
            time::OffsetDateTime::parse(&c.created, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .unwrap_or(0);
        let status = match st.status.as_str() {
            "running" => "Up".to_string(),
            "exited" => format!("Exited ({})", st.exit_code),
            "restarting" => format!("Restarting ({})", st.exit_code),
            other => other.to_string(),
        };
        out.push(ContainerSummary {
            id: c.id.clone(),
            names: vec![format!("/{}", c.name)],
            labels: c.process.labels.clone(),
            command: c.cmd.join(" "),
            created,
            state: st.status.as_str().to_string(),
            status,
            network_mode: network_mode_view(c, &nets),
            network_settings: SummaryNetworkSettings {
                networks: endpoint_settings(c, &nets),
            },
            ports: crate::ports::doc(&d, &c.id)
                .map(|doc| {
                    doc.published
                        .iter()
                        .map(|p| PortSummary {
                            ip: p.host_ip.to_string(),
                            private_port: p.container_port,
                            public_port: p.host_port,
                            kind: p.proto.as_str().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(Json(out))
}

async fn create_exec(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ExecCreateRequest = parse_body(&body, "exec")?;
    if req.cmd.is_empty() {
        return Err(ApiError::bad_request("no command given to exec"));
    }
    // The same rules as create's: a NUL cannot reach execve, an empty name is dockerd's 400.
    berth_plan::input::validate_cmd(&req.cmd)?;
    for e in &req.env {
        berth_plan::input::validate_env(e)?;
    }
    let c = d.find_container(&id)?;
    let st = d.state(&c.id)?;
    if st.status != Status::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.name
        )));
    }
    let exec_id = d.runtime.create_exec(
        &c.id,
        crate::runtime::ExecRequest {
            cmd: req.cmd,
            env: req.env,
            tty: req.tty,
            attach_stdin: req.attach_stdin,
            console_size: crate::containers::console_size(req.console_size.as_deref()),
        },
    );
    Ok((StatusCode::CREATED, Json(IdResponse { id: exec_id })).into_response())
}

/// `POST /exec/{id}/start`: with `Detach`, starts it and answers at once; else its output,
/// over the hijacked connection when the client asked for an upgrade (input too).
async fn start_exec(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = wants_upgrade(&req);
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the exec start body: {e}")))?;
    let start: berth_api::types::ExecStartRequest = parse_body(&body, "exec start")?;
    let cid = d
        .runtime
        .exec_container(&id)
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    let st = d.state(&cid)?;
    if st.status != Status::Running {
        return Err(ApiError::conflict(format!(
            "Container {cid} is not running"
        )));
    }
    let privileges = crate::security::privileges(&d.find_container(&cid)?.security);
    let size = crate::containers::console_size(start.console_size.as_deref());
    let session = d.runtime.start_exec(&id, st.pid, &privileges, size).await?;
    if start.detach {
        // The output is dropped as it comes; the process runs on.
        let mut output = session.output;
        tokio::spawn(async move { while output.recv().await.is_some() {} });
        return Ok(StatusCode::OK.into_response());
    }
    let content_type = stream_type(session.tty);
    if !upgrade {
        return Ok(stream_body(session.output, content_type));
    }
    let console = session
        .console
        .map(|c| Box::pin(async move { c }) as ConsoleFuture);
    Ok(hijack(
        req,
        content_type,
        session.output,
        console,
        Vec::new(),
    ))
}

/// The client asked to take the connection over (`Connection: Upgrade`, `Upgrade: tcp`, what
/// the docker CLI and SDKs send for attach and exec start).
fn wants_upgrade(req: &Request) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "tcp")
}

fn stream_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Answers `101 UPGRADED` and, once hyper hands the connection over, copies `output` to it and
/// its input to `console` (if any) until the output ends (the process exited: the connection
/// is closed), the client types `detach` or leaves. The process never waits for the client.
/// The console input goes to, once it exists (a container attached before its start has none
/// yet: the client's input waits in the socket until it has).
type ConsoleFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Arc<crate::console::Console>> + Send>>;

fn hijack(
    mut req: Request,
    content_type: &'static str,
    output: mpsc::Receiver<Bytes>,
    console: Option<ConsoleFuture>,
    detach: Vec<u8>,
) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("the client left before its connection was handed over: {e}");
                return;
            }
        };
        let (rd, wr) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let out = crate::console::copy_output(output, wr);
        let input = async move {
            match console {
                Some(c) => {
                    let c = c.await;
                    if crate::console::copy_input(rd, &c, &detach).await {
                        return;
                    }
                }
                None => {
                    // Nothing takes input: read (and drop) it until the client closes it.
                    let mut rd = rd;
                    let _ = tokio::io::copy(&mut rd, &mut tokio::io::sink()).await;
                }
            }
            // Input closed but not detached: the output goes on until the process ends.
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = out => {}
            _ = input => {}
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Deserialize)]
struct AttachQuery {
    stream: Option<String>,
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

/// `POST /containers/{id}/attach`: the container's output from now on until its next exit
/// and, with `stdin=1` on a container with `OpenStdin`, the client's input as its stdin.
async fn attach_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttachQuery>,
    req: Request,
) -> ApiResult<Response> {
    let c = d.find_container(&id)?;
    let detach = berth_api::detach_keys(q.detach_keys.as_deref()).map_err(ApiError::bad_request)?;
    if !truthy(&q.stream, false) {
        // Docker's `logs=1` without `stream` replays the log; berth only attaches to a stream.
        return Err(ApiError::bad_request(
            "berth attaches only with stream=1 (use /containers/{id}/logs for past output)",
        ));
    }
    let exit = d.exit_channel(&c.id).subscribe();
    let output = d.runtime.attach_output(
        &c.id,
        c.stdio.tty,
        truthy(&q.stdout, false),
        truthy(&q.stderr, false),
        exit,
    );
    let content_type = stream_type(c.stdio.tty);
    if !wants_upgrade(&req) {
        return Ok(stream_body(output, content_type));
    }
    let console = if truthy(&q.stdin, false) && c.stdio.open_stdin {
        let (d, id) = (d.clone(), c.id.clone());
        Some(Box::pin(async move {
            loop {
                if let Some(c) = d.runtime.console(&id) {
                    return c;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }) as ConsoleFuture)
    } else {
        None
    };
    Ok(hijack(req, content_type, output, console, detach))
}

#[derive(Deserialize)]
struct ResizeQuery {
    h: Option<String>,
    w: Option<String>,
}

/// `h` and `w` of a resize, as dockerd reads them (both numbers; 400 otherwise).
fn resize_size(q: &ResizeQuery) -> ApiResult<(u16, u16)> {
    let num = |v: &Option<String>, what: &str| {
        v.as_deref().unwrap_or("").parse::<u16>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resize {what}: {:?} is not a number from 0 to 65535",
                v.as_deref().unwrap_or("")
            ))
        })
    };
    Ok((num(&q.h, "height")?, num(&q.w, "width")?))
}

/// `POST /containers/{id}/resize?h=&w=`: the window size of its terminal (the process gets
/// SIGWINCH); nothing for a container without one.
async fn resize_container(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResizeQuery>,
) -> ApiResult<StatusCode> {
    let (h, w) = resize_size(&q)?;
    let c = d.find_container(&id)?;
    if d.state(&c.id)?.status != Status::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.id
        )));
    }
    if let Some(console) = d.runtime.console(&c.id) {
        console
            .resize(h, w)
            .map_err(|e| ApiError::internal(format!("resizing the terminal of {}: {e}", c.name)))?;
    }
    Ok(StatusCode::OK)
}

/// `POST /exec/{id}/resize?h=&w=`.
async fn resize_exec(
    State(d): D,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResizeQuery>,
) -> ApiResult<StatusCode> {
    let (h, w) = resize_size(&q)?;
    let console = d
        .runtime
        .exec_console(&id)
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    match console {
        Some(c) => c
            .resize(h, w)
            .map_err(|e| ApiError::internal(format!("resizing the terminal of exec {id}: {e}")))?,
        None => return Err(ApiError::conflict(format!("exec {id} is not running"))),
    }
    Ok(StatusCode::OK)
}

async fn inspect_exec(State(d): D, UrlPath(id): UrlPath<String>) -> ApiResult<Json<ExecInspect>> {
    let (running, code) = d
        .runtime
        .exec_status(&id)
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    Ok(Json(ExecInspect {
        id,
        running,
        exit_code: code.map(|c| c as i64),
    }))
}
