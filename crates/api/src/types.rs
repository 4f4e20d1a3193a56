//! Wire types. Network types follow the Docker Engine API field for field (PascalCase JSON), so
//! the stock `docker` CLI can drive berthd. Container types use Docker's shapes where Docker has
//! one (`NetworkSettings.Networks.<net>.IPAddress`, `State.Pid`, …) and berth's own otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Docker's error body: `{"message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong and what to do.
    pub message: String,
}

/// One IPAM pool in a create request or a network resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    /// CIDR.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// `--ip-range`.
    #[serde(rename = "IPRange", default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// `--aux-address NAME=IP`: addresses of the subnet the IPAM never gives to a container
    /// (Docker's `AuxiliaryAddresses`, omitted when empty).
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// IPAM section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// Always `default`.
    #[serde(default)]
    pub driver: String,
    /// `--ipam-opt`: options of the IPAM driver, kept and echoed as given (`null` when none
    /// were given, `{}` when an empty map was).
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Pools.
    #[serde(default)]
    pub config: Option<Vec<IpamConfig>>,
}

/// `POST /networks/create` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateRequest {
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// `bridge` (default).
    #[serde(default)]
    pub driver: String,
    /// `--scope`: empty or `local`; `swarm` and `global` are refused.
    #[serde(default)]
    pub scope: String,
    /// `--ipv4` (API 1.48): berth networks always have IPv4; `false` is refused.
    #[serde(
        rename = "EnableIPv4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv4: Option<bool>,
    /// `--ipv6`.
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: Option<bool>,
    /// IPAM.
    #[serde(rename = "IPAM", default)]
    pub ipam: Option<Ipam>,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// `--attachable`.
    #[serde(default)]
    pub attachable: bool,
    /// Swarm only; rejected when true.
    #[serde(default)]
    pub ingress: bool,
    /// Swarm only; rejected when true.
    #[serde(default)]
    pub config_only: bool,
    /// `--config-from`: berth has no configuration-only networks, so a name here is refused.
    #[serde(default)]
    pub config_from: Option<ConfigReference>,
    /// `--opt`.
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    /// `--label`.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Old clients send it; berth always refuses duplicates.
    #[serde(default)]
    pub check_duplicate: Option<bool>,
}

/// `POST /networks/create` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    /// The new network's id.
    pub id: String,
    /// Always empty.
    pub warning: String,
}

/// `ConfigFrom` (always empty in berth's answers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigReference {
    /// Empty.
    #[serde(default)]
    pub network: String,
}

/// A container as listed in a network's inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    /// Container name.
    pub name: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// MAC.
    pub mac_address: String,
    /// `10.1.0.2/24`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// `fd00::2/64` or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// Docker's `NetworkResource` (inspect and list).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkResource {
    /// Name.
    pub name: String,
    /// 64-hex id.
    pub id: String,
    /// RFC 3339.
    pub created: String,
    /// `local`.
    pub scope: String,
    /// `bridge`, `host`, `null`.
    pub driver: String,
    /// IPv4 enabled (API 1.48; true for every network but `host` and `none`).
    #[serde(rename = "EnableIPv4", default)]
    pub enable_ipv4: bool,
    /// IPv6 enabled.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// IPAM.
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// Internal.
    pub internal: bool,
    /// Attachable.
    pub attachable: bool,
    /// Always false.
    pub ingress: bool,
    /// Always empty.
    pub config_from: ConfigReference,
    /// Always false.
    pub config_only: bool,
    /// Attached containers by id.
    pub containers: BTreeMap<String, NetworkContainer>,
    /// Options as given.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// berth's notes about the network (not Docker's): what it cannot do and what to do about
    /// it (a macvlan network's host ↔ container limitation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub berth_notes: Vec<String>,
    /// Overlay networks: the hosts with endpoints on it (Docker's swarm-mode field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerInfo>>,
}

/// `NetworkResource.Peers[]`: a host of the cluster with endpoints on an overlay network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct PeerInfo {
    /// Node name.
    pub name: String,
    /// Its tunnel (advertised) address.
    #[serde(rename = "IP")]
    pub ip: String,
}

/// `IPAMConfig` of an endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct EndpointIpamConfig {
    /// `--ip`.
    #[serde(
        rename = "IPv4Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    /// `--ip6`.
    #[serde(
        rename = "IPv6Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
    /// `--link-local-ip`: link-local addresses put on the container's interface next to the
    /// allocated ones.
    #[serde(
        rename = "LinkLocalIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub link_local_ips: Option<Vec<String>>,
}

/// Docker's `EndpointSettings`: a request (connect, create) and a response (inspect).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    /// Static addresses asked for.
    #[serde(rename = "IPAMConfig", default)]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// Legacy links `NAME:ALIAS` (`--link` on a user-defined network): `ALIAS` resolves to
    /// container `NAME` on this network for this container only.
    #[serde(default)]
    pub links: Option<Vec<String>>,
    /// DNS aliases.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    /// MAC.
    #[serde(default)]
    pub mac_address: String,
    /// Endpoint driver options: kept and returned by inspect.
    #[serde(default)]
    pub driver_opts: Option<BTreeMap<String, String>>,
    /// Highest wins the default route.
    #[serde(default)]
    pub gw_priority: i64,
    /// Network id.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// Gateway.
    #[serde(default)]
    pub gateway: String,
    /// IPv4 address.
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
    /// Prefix length.
    #[serde(rename = "IPPrefixLen", default)]
    pub ip_prefix_len: u8,
    /// IPv6 gateway.
    #[serde(rename = "IPv6Gateway", default)]
    pub ipv6_gateway: String,
    /// IPv6 address.
    #[serde(rename = "GlobalIPv6Address", default)]
    pub global_ipv6_address: String,
    /// IPv6 prefix length.
    #[serde(rename = "GlobalIPv6PrefixLen", default)]
    pub global_ipv6_prefix_len: u8,
    /// Names this endpoint answers to in DNS.
    #[serde(rename = "DNSNames", default)]
    pub dns_names: Option<Vec<String>>,
}

/// `POST /networks/{id}/connect` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnectRequest {
    /// Container id or name (missing or empty: 400, like dockerd).
    #[serde(default)]
    pub container: String,
    /// Addresses and aliases.
    #[serde(default)]
    pub endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/disconnect` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkDisconnectRequest {
    /// Container id or name (missing or empty: 400, like dockerd).
    #[serde(default)]
    pub container: String,
    /// Accepted for compatibility.
    #[serde(default)]
    pub force: bool,
}

/// `POST /networks/prune` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkPruneResponse {
    /// Names of removed networks.
    pub networks_deleted: Vec<String>,
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct VersionResponse {
    /// berth's version.
    pub version: String,
    /// Highest Docker Engine API version spoken.
    pub api_version: String,
    /// Lowest.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub arch: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Component list, like dockerd.
    pub components: Vec<Component>,
}

/// A version component.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// `HostConfig` of a container create request (the networking and security parts of Docker's).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `bridge` (default), a network name, `host`, `none`, `container:NAME`.
    #[serde(default)]
    pub network_mode: String,
    /// The terminal's initial `[rows, columns]` (with `Tty`); `[0, 0]` or absent: the kernel's
    /// default until the first resize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<Vec<u32>>,
    /// `--dns`.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--link NAME[:ALIAS]`: legacy links on the default `bridge` network (`/etc/hosts`
    /// entries and `ALIAS_*` environment variables); ignored on user-defined networks, as by
    /// dockerd (the endpoint's `Links` are read there). `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub links: Vec<String>,
    /// `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// `-p`: container port (`80/tcp`) → host bindings (`HostIp` empty for every address,
    /// `HostPort` empty for any free port or `8000-8010` to pick one of a range). `null` reads
    /// as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub port_bindings: BTreeMap<String, Vec<PortBinding>>,
    /// `--privileged`: every capability, no seccomp filter, no masked paths, the host's /dev.
    #[serde(default)]
    pub privileged: bool,
    /// `--cap-add` (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub cap_drop: Vec<String>,
    /// `--security-opt`: `no-new-privileges[=true|false]`, `seccomp=unconfined`,
    /// `systempaths=unconfined`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub security_opt: Vec<String>,
    /// `--read-only`.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// `-v HOST:CONTAINER[:ro]`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub binds: Vec<String>,
    /// `--tmpfs PATH[:OPTIONS]`: path → options.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tmpfs: BTreeMap<String, String>,
    /// `--restart`: what berthd does when the command exits. Absent or `null` reads as
    /// `{"Name": "", "MaximumRetryCount": 0}` (no restarts), as dockerd reads it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub restart_policy: RestartPolicy,
    /// `--sysctl`: namespaced sysctls set in the container (`net.*` with a network namespace
    /// of its own, the IPC namespace's `kernel.shm*`/`kernel.msg*`/`kernel.sem`/`fs.mqueue.*`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub sysctls: BTreeMap<String, String>,
}

/// `POST /containers/{id}/update` body: Docker's `UpdateConfig`. berth limits no resources, so
/// only `RestartPolicy` is read (the resource fields the docker CLI always sends are checked by
/// berthd: zero or empty, else refused).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerUpdateRequest {
    /// The new restart policy; absent, `null` or an empty `Name`: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
}

/// `POST /containers/{id}/update` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerUpdateResponse {
    /// Warnings (none).
    pub warnings: Vec<String>,
}

/// Docker's `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// `no` (or empty), `always`, `unless-stopped`, `on-failure`.
    #[serde(default)]
    pub name: String,
    /// With `on-failure`: at most this many restarts (0: no limit).
    #[serde(default)]
    pub maximum_retry_count: i64,
}

/// Reads JSON `null` as the type's default (Go clients send `null` for empty maps).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `NetworkingConfig` of a container create request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkingConfig {
    /// Per network (by name or id): `--ip`, `--network-alias`.
    #[serde(default)]
    pub endpoints_config: BTreeMap<String, EndpointSettings>,
}

/// `POST /containers/create?name=NAME` body (Docker's shape, no image: `Cmd` runs from the host's
/// filesystem, or from `Rootfs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateRequest {
    /// `--hostname` (defaults to the name).
    #[serde(default)]
    pub hostname: String,
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// berth: `--rootfs DIR`.
    #[serde(default)]
    pub rootfs: Option<String>,
    /// Networking options.
    #[serde(default)]
    pub host_config: HostConfig,
    /// Per-network endpoint options.
    #[serde(default)]
    pub networking_config: NetworkingConfig,
    /// The first network endpoint's MAC, as API versions before 1.44 send it (newer clients
    /// send it in that endpoint's `MacAddress`, which wins).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// `-t`: run the command on a pseudo-terminal.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// `-i`: keep the command's stdin open for attached clients.
    #[serde(default, skip_serializing_if = "is_false")]
    pub open_stdin: bool,
    /// Close the stdin after the first attached client closed its input (`docker run -i` sets it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_once: bool,
    /// Accepted and ignored, as dockerd does (attaching is the attach endpoint's business).
    #[serde(default, skip_serializing_if = "is_false")]
    pub attach_stdin: bool,
    /// `-w`: the directory the command starts in (empty: `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `-u`: `UID[:GID]` or `NAME[:GROUP]`, looked up in the container's `/etc/passwd` and
    /// `/etc/group` (empty: root).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `--label`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /containers/create` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateResponse {
    /// Id.
    pub id: String,
    /// Warnings.
    pub warnings: Vec<String>,
    /// berth's own, only in the answer to `start=1` (`berth run -d`): berthd started the
    /// container too. A daemon that does not know `start=1` (dockerd, an older berthd)
    /// ignores the parameter and leaves this out, and the CLI then sends the `start`
    /// itself. Never in an answer to a Docker client, which never sends `start=1`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub berth_started: bool,
}

/// `State` of a container inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStateView {
    /// `created`, `running`, `restarting`, `exited`.
    pub status: String,
    /// Running (also while restarting, as dockerd says).
    pub running: bool,
    /// Its restart policy starts it again after a delay.
    #[serde(default)]
    pub restarting: bool,
    /// Init pid (0 when not running).
    pub pid: i32,
    /// Exit code.
    pub exit_code: i32,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
}

/// `Config` of a container inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfigView {
    /// Hostname.
    pub hostname: String,
    /// Command.
    pub cmd: Vec<String>,
    /// Env.
    pub env: Vec<String>,
    /// The command runs on a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// Its stdin stays open for attached clients.
    #[serde(default)]
    pub open_stdin: bool,
    /// Its stdin closes after the first attached client closed its input.
    #[serde(default)]
    pub stdin_once: bool,
    /// The directory the command starts in (empty: `/`).
    #[serde(default)]
    pub working_dir: String,
    /// The user it runs as (empty: root).
    #[serde(default)]
    pub user: String,
    /// Labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `NetworkSettings` of a container inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// Path of the container's network namespace.
    pub sandbox_key: String,
    /// Gateway endpoint's address (Docker's top-level legacy fields).
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Gateway endpoint's prefix length.
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    /// Gateway endpoint's gateway.
    pub gateway: String,
    /// Gateway endpoint's MAC.
    pub mac_address: String,
    /// Published ports (`80/tcp` → bindings).
    pub ports: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// Per network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// One host binding of a published port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// Host IP.
    pub host_ip: String,
    /// Host port.
    pub host_port: String,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// Id.
    pub id: String,
    /// `/name`, like Docker.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// Command.
    pub path: String,
    /// Arguments.
    pub args: Vec<String>,
    /// State.
    pub state: ContainerStateView,
    /// Generated resolv.conf.
    pub resolv_conf_path: String,
    /// Generated hostname file.
    pub hostname_path: String,
    /// Generated hosts file.
    pub hosts_path: String,
    /// stdout+stderr log directory.
    pub log_path: String,
    /// Restarts by its restart policy since it was last started through the API.
    #[serde(default)]
    pub restart_count: u32,
    /// Config.
    pub config: ContainerConfigView,
    /// HostConfig as given.
    pub host_config: HostConfig,
    /// Network settings.
    pub network_settings: NetworkSettings,
    /// berth: `--rootfs`.
    pub rootfs: Option<String>,
}

/// `GET /containers/json` item (Docker's `ContainerSummary`, trimmed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// Id.
    pub id: String,
    /// `["/name"]`.
    pub names: Vec<String>,
    /// The command line.
    pub command: String,
    /// Unix seconds.
    pub created: i64,
    /// `running`, `exited`, `created`.
    pub state: String,
    /// `Up`, `Exited (0)`.
    pub status: String,
    /// `bridge`, a network, `host`, `none`, `container:ID`.
    pub network_mode: String,
    /// Networks.
    pub network_settings: SummaryNetworkSettings,
    /// Published ports in force (Docker's `Ports`).
    #[serde(default)]
    pub ports: Vec<PortSummary>,
    /// Labels (`--label`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One published port of a container summary (Docker's `Port`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PortSummary {
    /// Host address (`0.0.0.0`, `::`, `127.0.0.1`, …).
    #[serde(rename = "IP", default)]
    pub ip: String,
    /// Container port.
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    /// Host port.
    #[serde(rename = "PublicPort", default)]
    pub public_port: u16,
    /// `tcp`, `udp`, `sctp`.
    #[serde(rename = "Type")]
    pub kind: String,
}

/// Networks of a container summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryNetworkSettings {
    /// Per network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `POST /containers/{id}/wait` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    /// Exit code.
    pub status_code: i64,
}

/// `POST /containers/{id}/exec` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecCreateRequest {
    /// Command.
    pub cmd: Vec<String>,
    /// Env.
    #[serde(default)]
    pub env: Vec<String>,
    /// Run the command on a pseudo-terminal.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// Give the command the attached client's input as stdin (else `/dev/null`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub attach_stdin: bool,
    /// The terminal's initial `[rows, columns]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<Vec<u32>>,
}

/// `POST /exec/{id}/start` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExecStartRequest {
    /// Start it and answer at once, without its output.
    #[serde(default)]
    pub detach: bool,
    /// Must match the exec's `Tty` (dockerd ignores a difference too).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's initial `[rows, columns]` (overrides the create's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<Vec<u32>>,
}

/// `POST /containers/{id}/exec` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IdResponse {
    /// Id.
    pub id: String,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ExecInspect {
    /// Id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Still running.
    pub running: bool,
    /// Exit code once finished.
    pub exit_code: Option<i64>,
}

/// `GET /info` (berth's fields in Docker's shape where one exists).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct InfoResponse {
    /// Daemon id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Containers.
    pub containers: usize,
    /// Running containers.
    pub containers_running: usize,
    /// Always 0: berth does not pause containers.
    #[serde(default)]
    pub containers_paused: usize,
    /// Created or exited containers.
    #[serde(default)]
    pub containers_stopped: usize,
    /// Always 0: berth has no images.
    #[serde(default)]
    pub images: usize,
    /// Docker's storage driver: `none` (no images; a container's root is a read-only view of
    /// the host's, or its `--rootfs`).
    #[serde(default)]
    pub driver: String,
    /// Where container output goes: `berth-file` (a file per stream in the state dir).
    #[serde(default)]
    pub logging_driver: String,
    /// Built-in plugins (`Network`: the drivers berth has).
    #[serde(default)]
    pub plugins: PluginsInfo,
    /// Swarm state: always `inactive` (berth is not a swarm node).
    #[serde(default)]
    pub swarm: SwarmInfo,
    /// CPUs of the host.
    #[serde(rename = "NCPU", default)]
    pub ncpu: usize,
    /// Memory of the host, bytes.
    #[serde(default)]
    pub mem_total: u64,
    /// Host name.
    #[serde(default)]
    pub name: String,
    /// `PRETTY_NAME` of the host's os-release.
    #[serde(default)]
    pub operating_system: String,
    /// `linux`.
    #[serde(rename = "OSType", default)]
    pub os_type: String,
    /// `uname -m`.
    #[serde(default)]
    pub architecture: String,
    /// Kernel release.
    #[serde(default)]
    pub kernel_version: String,
    /// The state directory (Docker's field for it).
    #[serde(default)]
    pub docker_root_dir: String,
    /// Containers keep running while berthd restarts (always true).
    #[serde(default)]
    pub live_restore_enabled: bool,
    /// The container init: berthd itself, re-executed.
    #[serde(default)]
    pub init_binary: String,
    /// Docker's `name=…,profile=…` entries for the confinement every container gets.
    #[serde(default)]
    pub security_options: Vec<String>,
    /// The pools subnets are taken from when a network is created without one.
    #[serde(default)]
    pub default_address_pools: Vec<AddressPool>,
    /// Always false.
    #[serde(default)]
    pub debug: bool,
    /// Always false.
    #[serde(default)]
    pub experimental_build: bool,
    /// Networks.
    pub networks: usize,
    /// berth's version.
    pub server_version: String,
    /// State directory.
    pub state_dir: String,
    /// Store backend.
    pub store: String,
    /// Warnings a user must see (e.g. a host FORWARD policy that drops berth's traffic).
    pub warnings: Vec<String>,
    /// Whether berth turned on IPv4 forwarding (it was off before).
    pub ip_forward_enabled_by_berth: bool,
    /// The embedded DNS resolver (absent from older daemons).
    #[serde(default)]
    pub dns: DnsInfo,
    /// The reconcile loop: passes, drift repaired (absent from older daemons).
    #[serde(default)]
    pub reconciler: ReconcilerInfo,
    /// Docker's classic field: the cluster store URL (`etcd://…`), empty without one.
    #[serde(default)]
    pub cluster_store: String,
    /// Docker's classic field: the address this host advertises to the cluster.
    #[serde(default)]
    pub cluster_advertise: String,
    /// The cluster this host is a node of (absent without `--cluster-store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// How full the finite resources are: bridge ports, addresses, the conntrack table
    /// (absent from older daemons).
    #[serde(default)]
    pub capacity: CapacityInfo,
}

/// `GET /info` → `Cluster`: this host's membership and the cluster store's health.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ClusterInfo {
    /// The store (`etcd:http://10.0.0.10:2379 (keys under /berth/)`).
    pub store: String,
    /// Whether the store answered the last request (reads and keep-alives).
    pub healthy: bool,
    /// The last failure talking to the store, when unhealthy.
    pub error: String,
    /// This host's node name.
    pub node: String,
    /// The address it advertises.
    pub addr: String,
    /// Live nodes (hosts whose lease is alive), this one included; 0 when unhealthy.
    pub nodes: usize,
}

/// `GET /cluster/nodes`: one host of the cluster (`berth node ls`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// The address other hosts reach it at.
    pub addr: String,
    /// Whether this is the host that answered.
    #[serde(rename = "Self")]
    pub is_self: bool,
    /// berth's version there.
    pub version: String,
    /// When it joined (this registration; RFC 3339).
    pub joined_at: String,
    /// Seconds since it joined.
    pub age_secs: u64,
    /// Its lease's TTL: it is forgotten this long after it stops renewing.
    pub lease_ttl_secs: u64,
    /// Endpoints it has on cluster-wide networks.
    pub endpoints: usize,
}

/// `GET /info` → `Plugins`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PluginsInfo {
    /// Volume drivers (none).
    pub volume: Vec<String>,
    /// Network drivers.
    pub network: Vec<String>,
    /// Authorization plugins (none).
    pub authorization: Option<Vec<String>>,
    /// Log drivers.
    pub log: Vec<String>,
}

/// `GET /info` → `Swarm` (Docker's `swarm.Info` of a node that is not in a swarm).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SwarmInfo {
    /// Empty.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Empty.
    pub node_addr: String,
    /// `inactive`.
    pub local_node_state: String,
    /// False.
    pub control_available: bool,
    /// Empty.
    pub error: String,
    /// None.
    pub remote_managers: Option<Vec<String>>,
}

/// One of `GET /info` → `DefaultAddressPools`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct AddressPool {
    /// The pool, e.g. `172.17.0.0/16`.
    pub base: String,
    /// Prefix length of each subnet taken from it.
    pub size: u8,
}

/// `GET /info` → `Reconciler`: the loop that keeps the kernel equal to the stored intent,
/// counted since berthd started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReconcilerInfo {
    /// Passes run (API calls, start-up, notifications, timer).
    pub passes: u64,
    /// Kernel steps that repaired drift (passes not caused by an API call).
    pub repairs: u64,
    /// Kernel steps applied in all.
    pub steps_applied: u64,
    /// Kernel steps that failed.
    pub errors: u64,
    /// The last repair: what was done, to what, and why.
    pub last_repair: Option<String>,
    /// When (RFC 3339).
    pub last_repair_at: Option<String>,
    /// The last failed step and its error.
    pub last_error: Option<String>,
    /// What the last full pass found in the way that is not berth's to change.
    pub problems: Vec<String>,
}

/// `GET /system/check`: the kernel against the stored intent, and the steps a reconcile pass
/// would take, computed without applying anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SystemCheck {
    /// Nothing to do.
    pub in_sync: bool,
    /// The steps a pass would take, in order.
    pub steps: Vec<CheckStep>,
    /// What is wrong and not berth's to fix (a foreign link in the way).
    pub problems: Vec<String>,
    /// Desired and observed counts per kind of object.
    pub summary: std::collections::BTreeMap<String, CheckCount>,
    /// The loop's counters.
    pub reconciler: ReconcilerInfo,
}

/// One step of a [`SystemCheck`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckStep {
    /// What it would do (`CreateEndpoint`, `DeleteLink`, `FirewallBase`, …).
    pub action: String,
    /// To what.
    pub object: String,
    /// Why.
    pub reason: String,
}

/// Desired and observed counts of one kind of object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckCount {
    /// What berth wants.
    pub desired: usize,
    /// What the kernel has.
    pub observed: usize,
}

/// `GET /system/topology`: networks, their devices, the veths and containers on them, built
/// from what the kernel has (observed) with berth's intent alongside and every difference marked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Topology {
    /// The kernel has what berth wants.
    pub in_sync: bool,
    /// Every network.
    pub networks: Vec<TopoNetwork>,
    /// Every container, with its DNS names and published ports.
    pub containers: Vec<TopoContainer>,
    /// berth's links in the kernel that nothing wants (`link X not wanted`).
    pub orphans: Vec<TopoLink>,
    /// The steps a reconcile pass would take, and problems (objects in the way), as text.
    pub drift: Vec<String>,
}

/// A network in a [`Topology`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TopoNetwork {
    /// Name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// `bridge`, `macvlan`, `ipvlan`, `host`, `null`.
    pub driver: String,
    /// Subnets (CIDR).
    pub subnets: Vec<String>,
    /// Gateways.
    pub gateways: Vec<String>,
    /// `--internal`.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// `berth.network.allow_direct`.
    pub allow_direct: bool,
    /// Its device: the bridge, or the parent interface of a macvlan/ipvlan network.
    pub device: Option<TopoLink>,
    /// A macvlan network's host shim.
    pub shim: Option<TopoLink>,
    /// Endpoints of running containers (those of stopped containers have nothing in the kernel).
    pub endpoints: Vec<TopoEndpoint>,
}

/// A link of the host as berth wants it and as the kernel has it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TopoLink {
    /// Name.
    pub name: String,
    /// `bridge`, `veth`, `macvlan`, `ipvlan`, `parent`, …
    pub kind: String,
    /// `ok`, `missing`, `differs`, `down`, `not wanted`, `not berth's` (a parent, or a foreign
    /// link), `not observed`.
    pub state: String,
    /// What differs, for people (empty when ok).
    pub detail: String,
    /// Observed addresses.
    pub addrs: Vec<String>,
    /// Observed master (the bridge of a port).
    pub master: String,
    /// Observed `IFF_UP`.
    pub up: bool,
}

/// An endpoint: a container's interface on a network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TopoEndpoint {
    /// Container name.
    pub container: String,
    /// Interface inside the container (`eth0`).
    pub ifname: String,
    /// Addresses berth gave it.
    pub addrs: Vec<String>,
    /// Addresses the kernel shows inside the container (when looked into).
    pub observed_addrs: Vec<String>,
    /// The host side of its veth (bridge networks).
    pub veth: Option<TopoLink>,
    /// `ok`, `missing`, `differs` or `not observed` for the container side.
    pub state: String,
    /// What differs.
    pub detail: String,
    /// The names it answers to on this network (container name, aliases, short id).
    pub dns_names: Vec<String>,
}

/// A container in a [`Topology`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TopoContainer {
    /// Name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// `networks`, `host`, `none`, `container:NAME`.
    pub mode: String,
    /// `running`, `exited`, `created`.
    pub status: String,
    /// Published ports (`0.0.0.0:8080->80/tcp`).
    pub ports: Vec<String>,
}

/// `GET /containers/{id}/explain`: who can reach a container, on which ports, from where, and
/// where it can go, computed from the intent; with `verify=1` also what real probes found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Exposure {
    /// The container.
    pub container: String,
    /// The container whose network namespace it shares (`container:` mode).
    pub netns_of: String,
    /// `networks`, `host`, `none`, `container:NAME`.
    pub mode: String,
    /// Whether the namespace's holder runs.
    pub running: bool,
    /// Its addresses: `10.1.0.2/24 on web (bridge, eth0)`.
    pub addresses: Vec<String>,
    /// TCP sockets listening in its namespace (`0.0.0.0:80`), when read.
    pub listening: Option<Vec<String>>,
    /// Published ports (`0.0.0.0:8080->80/tcp`).
    pub published: Vec<String>,
    /// Who can reach it.
    pub inbound: Vec<ExposureFlow>,
    /// Where it can go.
    pub outbound: Vec<ExposureFlow>,
    /// Everything else worth knowing.
    pub notes: Vec<String>,
    /// What `verify=1` found.
    pub verify: Option<VerifyReport>,
}

/// One flow of an [`Exposure`] and berth's verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExposureFlow {
    /// `outside`, `host`, `container`, `network`, `namespace`.
    pub peer_kind: String,
    /// Who (`the host`, `container client`).
    pub peer: String,
    /// What is reached.
    pub target: String,
    /// Which ports.
    pub ports: String,
    /// Whether berth lets it through.
    pub allowed: bool,
    /// The deciding rule, `chain "comment"` (empty where none of berth's rules is involved).
    pub rule: String,
    /// Why.
    pub cause: String,
    /// What would allow it.
    pub fix: String,
    /// `verify=1`: `agrees`, `DIFFERS`, `inconclusive` or `not probed`.
    pub verified: String,
}

/// What the probes of `verify=1` found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VerifyReport {
    /// Every conclusive probe agreed with the plan.
    pub agrees: bool,
    /// The probes, in the order of the flows.
    pub probes: Vec<ProbeResult>,
    /// Each disagreement, for people.
    pub differences: Vec<String>,
    /// What could not be probed and why (the outside cannot be reached from berthd).
    pub not_probed: Vec<String>,
}

/// One connection attempt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProbeResult {
    /// `host` or `container NAME`.
    pub from: String,
    /// `ADDR:PORT`.
    pub to: String,
    /// Index of the flow in `Inbound`.
    pub flow: usize,
    /// `open` or `blocked`, as the plan says.
    pub expected: String,
    /// `connected`, `refused`, `timeout`, `unreachable: …`, `error: …`.
    pub outcome: String,
    /// The outcome matches the plan (`false` also for an inconclusive probe).
    pub agrees: bool,
    /// Milliseconds it took.
    pub millis: u64,
}

/// One line of the `verify=1` stream (`application/x-ndjson`): progress lines, then the report
/// (or an error).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExplainEvent {
    /// A probe done: `done/total from → to: outcome`.
    pub progress: Option<String>,
    /// The final report.
    pub exposure: Option<Exposure>,
    /// What failed, if the report cannot be made.
    pub error: Option<String>,
}

/// `GET /info` → `Capacity`: what runs out first on a busy host, before it does.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CapacityInfo {
    /// Ports one Linux bridge holds (1,023: `BR_MAX_PORTS` without port 0).
    pub bridge_max_ports: u64,
    /// Per network.
    pub networks: Vec<NetworkCapacity>,
    /// Entries of berthd's namespace's conntrack table (absent when it has none yet).
    pub conntrack_entries: Option<u64>,
    /// Its size, `net.netfilter.nf_conntrack_max`.
    pub conntrack_max: Option<u64>,
}

/// One network's share of [`CapacityInfo`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkCapacity {
    /// Network name.
    pub network: String,
    /// Driver.
    pub driver: String,
    /// Ports its bridge holds on this host (running containers, and the VXLAN port of an
    /// overlay); absent for networks without a bridge.
    pub bridge_ports: Option<u64>,
    /// Addresses per subnet.
    pub subnets: Vec<SubnetCapacity>,
}

/// One subnet's addresses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SubnetCapacity {
    /// The subnet.
    pub subnet: String,
    /// Addresses held by this host's containers (created or running).
    pub used: u64,
    /// Addresses a container can get (range without network, gateway, broadcast and
    /// auxiliary addresses; at most 2^64 − 1).
    pub usable: u64,
}

/// `GET /info` → `Dns`: berth's embedded resolver, counted since berthd started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DnsInfo {
    /// Addresses it listens on (port 53 of each DNS-enabled network's gateways).
    pub listen: Vec<String>,
    /// Upstream resolvers read from the host's resolv.conf.
    pub upstreams: Vec<String>,
    /// Messages received (UDP and TCP).
    pub queries: u64,
    /// Of those, over TCP.
    pub tcp_queries: u64,
    /// Answered from the container table.
    pub answered_locally: u64,
    /// Relayed to an upstream resolver.
    pub forwarded: u64,
    /// Forwarded queries no upstream answered in time (the client got SERVFAIL).
    pub failures: u64,
    /// Refused: unknown asker, or a name outside an internal network.
    pub refused: u64,
    /// Malformed (FORMERR, NOTIMP) or dropped messages.
    pub malformed: u64,
    /// Local answers truncated for UDP (the client retries over TCP).
    pub truncated: u64,
    /// Median time from receipt to answer of local answers, microseconds.
    pub local_p50_us: f64,
    /// 99th percentile of the same.
    pub local_p99_us: f64,
    /// Median time from receipt to answer of forwarded queries, microseconds.
    pub forward_p50_us: f64,
    /// 99th percentile of the same.
    pub forward_p99_us: f64,
}

/// Docker's multiplexed stream: every frame is `[stream, 0, 0, 0, len_be32…]` + payload.
pub mod stream {
    /// stdout.
    pub const STDOUT: u8 = 1;
    /// stderr.
    pub const STDERR: u8 = 2;
    /// berth's own, in the answer to `POST /containers/create?start=1&attach=1` only (Docker
    /// clients never send it): the create's answer (a `ContainerCreateResponse`, JSON), the
    /// first frame.
    pub const CREATED: u8 = 0xB0;
    /// berth's own, as [`CREATED`]: the container's exit (a `WaitResponse`, JSON), the last
    /// frame, after all of its output.
    pub const EXITED: u8 = 0xB1;

    /// Frames `payload` for `stream`.
    pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        out.push(stream);
        out.extend_from_slice(&[0, 0, 0]);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload[..len as usize]);
        out
    }

    /// Incremental decoder: feed bytes, get complete frames.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    impl Decoder {
        /// Appends `bytes` and returns every complete `(stream, payload)` frame.
        pub fn push(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
            self.buf.extend_from_slice(bytes);
            let mut frames = Vec::new();
            loop {
                if self.buf.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
                    as usize;
                if self.buf.len() < 8 + len {
                    break;
                }
                let payload = self.buf[8..8 + len].to_vec();
                frames.push((self.buf[0], payload));
                self.buf.drain(..8 + len);
            }
            frames
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn frames_round_trip_in_pieces() {
            let mut bytes = frame(STDOUT, b"hello");
            bytes.extend(frame(STDERR, b""));
            bytes.extend(frame(STDERR, b"err"));
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(3) {
                got.extend(d.push(chunk));
            }
            assert_eq!(
                got,
                vec![
                    (STDOUT, b"hello".to_vec()),
                    (STDERR, vec![]),
                    (STDERR, b"err".to_vec())
                ]
            );
        }
    }
}

/// `POST /system/trace` body: the flow to trace (`berth trace`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TraceRequest {
    /// Destination, `HOST:PORT` (`[V6]:PORT`), HOST an address or a container's name.
    pub to: String,
    /// Where the probe is sent from: empty for the host (berthd's namespace), a container's
    /// name or id, a network namespace (`/run/netns/NAME`, a path, or a name under
    /// /run/netns), or an address (with `Watch`: only packets from it).
    pub from: String,
    /// `tcp` (default) or `udp`.
    pub proto: String,
    /// Send no probe: trace the next `Count` packets of real traffic matching the flow.
    pub watch: bool,
    /// With `Watch`: how many packets (default 1, at most 100).
    pub count: u32,
    /// Seconds the trace may last (default 5, or 30 with `Watch`; at most 600).
    pub timeout: f64,
}

/// One line of the `application/x-ndjson` answer of `POST /system/trace`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TraceEvent {
    /// What the trace is doing (`table berth-trace-… installed`, `waiting for traffic`);
    /// an empty line is a keep-alive.
    pub progress: Option<String>,
    /// The journey (the fields of `berth_plan::trace::Journey`), last.
    #[schema(value_type = Object)]
    pub journey: Option<serde_json::Value>,
    /// What failed, if no journey can be made.
    pub error: Option<String>,
}
