//! The HTTP/JSON API on the daemon's Unix socket: request and response
//! bodies, the server and the client.
//!
//! Paths are versioned (`/v1/...`). Errors are `{"message": "..."}` with the
//! status of [`crate::error::Error::status`].

pub mod client;
pub mod server;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::{
    datapath::{MapSummary, ProgramSummary},
    model::{DriverKind, Ipam, Ipam6, MacAddr, RuntimeRef},
    spec::PortMapping,
};

/// `POST /v1/networks`. Values stay text so that the daemon alone parses
/// and reports them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    /// `KEY=VALUE` each.
    #[serde(default)]
    pub options: Vec<String>,
    /// Dual-stack (`--ipv6`).
    #[serde(default)]
    pub ipv6: bool,
    /// The IPv6 subnet (default with `ipv6`: a /64 of the daemon's ULA /48).
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    #[serde(default)]
    pub ip_range6: Option<String>,
}

/// A network as `network ls` and `network inspect` show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub driver: DriverKind,
    pub created: u64,
    pub predefined: bool,
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// The IPv6 side of a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam6: Option<Ipam6>,
    pub options: BTreeMap<String, String>,
    /// Where the gateway address lives (bridge: the `lo:dnet` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_link: Option<String>,
    /// The host's own address in the network (macvlan `host_access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<Ipv4Addr>,
    /// Its IPv6 side on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address6: Option<Ipv6Addr>,
    /// The runtime that made the network (Docker, with its network id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
    pub containers: Vec<AttachedView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A container's endpoint in a network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachedView {
    pub container: String,
    pub container_id: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Dual-stack: the IPv6 address, its prefix and the IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
}

/// `POST /v1/containers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerCreate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// A fixed IPv6 address (`--ip6`, dual-stack networks).
    #[serde(default)]
    pub ip6: Option<String>,
    /// `-p` specs as typed.
    #[serde(default)]
    pub publish: Vec<String>,
    /// With `detach`, the daemon starts this command in the container.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub detach: bool,
    /// A foreground `dnet run`: set (to any pid) to ask that the container
    /// be owned by the process on the other end of the API connection. The
    /// daemon takes that pid from the socket (`SO_PEERCRED`), never from
    /// here, and removes the container when that process is gone.
    #[serde(default)]
    pub owner_pid: Option<u32>,
    /// Extra names in `network` (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The container's own upstream resolvers (`--dns`, IPv4).
    #[serde(default)]
    pub dns: Vec<String>,
    /// Its host name (`--hostname`; default: its short id).
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `POST /v1/networks/{net}/connect`: a container by name, or a namespace
/// by path (another runtime's container).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub netns: Option<String>,
    /// Name for a container made from `netns`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// A fixed IPv6 address (dual-stack networks).
    #[serde(default)]
    pub ip6: Option<String>,
    /// Extra names of the container in this network.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Where `POST /v1/attach` puts the container end of the pair.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttachTarget {
    /// Put the container end into this namespace (a path such as /proc/PID/ns/net or /run/netns/X).
    Netns { path: String },
    /// Make the pair and leave the container end in the daemon's namespace, down, under a
    /// temporary name, for the runtime to move and rename (Docker's Join). Bridge networks only.
    HostSide,
}

/// `POST /v1/attach`: the one attach operation every front end uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachRequest {
    /// Network name, id or unique id prefix.
    pub network: String,
    pub target: AttachTarget,
    /// Interface name inside the container (default: the first free ethN).
    #[serde(default)]
    pub ifname: Option<String>,
    /// A static IPv4 address.
    #[serde(default)]
    pub ip: Option<String>,
    /// A static IPv6 address (dual-stack networks).
    #[serde(default)]
    pub ip6: Option<String>,
    /// A static MAC, else 02:42 + the IPv4 address.
    #[serde(default)]
    pub mac: Option<String>,
    /// `-p` specs as `dnet run -p` takes them.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Extra names in this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Name of the container record when a new one is made.
    #[serde(default)]
    pub name: Option<String>,
    /// Set by the Docker and CNI front ends: a repeat attach with the same
    /// runtime ref and network returns the existing attachment (200).
    #[serde(default)]
    pub runtime: Option<RuntimeRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteView {
    /// "0.0.0.0/0", "::/0", or the network's subnet.
    pub dst: String,
    #[serde(default)]
    pub gateway: Option<std::net::IpAddr>,
}

/// What a runtime needs to know of an attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachResponse {
    pub container_id: String,
    pub container: String,
    pub network_id: String,
    pub network: String,
    /// Name inside the container (Netns) or the name the runtime should give it (HostSide: "eth0"..).
    pub ifname: String,
    /// The host-side veth.
    #[serde(default)]
    pub host_ifname: Option<String>,
    /// HostSide only: the current name of the container end in the daemon's namespace.
    #[serde(default)]
    pub container_side: Option<String>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub prefix: Option<u8>,
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// None on --internal networks.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Dual-stack: the IPv6 address, its prefix and the IPv6 gateway
    /// (None on --internal networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub routes: Vec<RouteView>,
    pub mtu: u32,
    /// The mappings published by this request.
    pub ports: Vec<PortMapping>,
    /// The network's resolver; None until there is one.
    #[serde(default)]
    pub dns: Option<Ipv4Addr>,
}

/// `POST /v1/detach`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DetachRequest {
    /// Network name/id; None = every network of the container.
    #[serde(default)]
    pub network: Option<String>,
    /// The container by name/id ...
    #[serde(default)]
    pub container: Option<String>,
    /// ... or by runtime ref.
    #[serde(default)]
    pub runtime: Option<RuntimeRef>,
    /// Nothing to detach is success (CNI DEL, Docker DeleteEndpoint repeats).
    #[serde(default)]
    pub missing_ok: bool,
}

/// `POST /v1/attach/check`: a runtime's existing attachment (CNI CHECK).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachCheck {
    pub runtime: RuntimeRef,
    /// Network name, id or unique id prefix.
    pub network: String,
}

/// `POST /v1/attach/collect`: detach a runtime's containers it no longer
/// knows (CNI GC).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AttachCollect {
    /// "cni".
    pub runtime: String,
    /// Only this network's endpoints; None = every network.
    #[serde(default)]
    pub network: Option<String>,
    /// The runtime's ids (`RuntimeRef::id`) still valid: these stay.
    #[serde(default)]
    pub keep: Vec<String>,
}

/// What `POST /v1/attach/collect` detached.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Collected {
    /// The runtime's ids whose attachments went.
    pub detached: Vec<String>,
}

/// `POST /v1/networks/{net}/disconnect`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DisconnectRequest {
    pub container: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A foreground container, or one attached from another runtime.
    Attached,
    Running,
    Exited,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub created: u64,
    /// The namespace to enter (`dnet run`, `dnet exec`).
    pub netns_path: PathBuf,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub command: Vec<String>,
    pub networks: Vec<AttachedView>,
    pub ports: Vec<PortMapping>,
    /// Its own mount and UTS namespaces (`dnet run`, `dnet exec` enter them
    /// too): a container whose network namespace dnet made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mntns_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utsns_path: Option<PathBuf>,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_addr: Option<Ipv4Addr>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub networks: usize,
    pub containers: usize,
    /// Link removals still finishing in the background.
    #[serde(default)]
    pub pending_removals: usize,
    /// Attaches waiting for a removal in their namespace to end.
    #[serde(default)]
    pub removal_waits: usize,
    pub programs: Vec<ProgramSummary>,
    pub maps: Vec<MapSummary>,
}

/// `GET /v1/stats`: one row per endpoint, plus what belongs to none.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsView {
    pub endpoints: Vec<EndpointStatsView>,
    /// Drops not tied to an endpoint, by reason.
    pub unattributed_drops: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointStatsView {
    pub container: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets of the endpoint's flows that NAT rewrote.
    #[serde(default)]
    pub translated: u64,
    /// Drops by reason; reasons with no drops are left out.
    pub drops: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// A flow's state, as `dnet conntrack ls` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowState {
    /// TCP: a SYN went out, nothing came back yet.
    SynSent,
    /// TCP: the SYN was answered (SYN-ACK), the opener's ACK is still due.
    /// Half-open: the short SYN timeout.
    SynRecv,
    /// TCP: the handshake completed (the opener's ACK after the SYN-ACK).
    Established,
    /// TCP: FIN both ways, or a RST.
    Closing,
    /// UDP or ICMP: seen one way only.
    Unreplied,
    /// UDP or ICMP: seen both ways.
    Replied,
}

/// One flow as `dnet conntrack ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowView {
    pub proto: String,
    /// `snat` (a container to the world), `dnat` (the world to a published
    /// port), `hairpin` (a container to a published port), `routed` (a
    /// routed IPv6 network's flow, either way: tracked, nothing
    /// translated) or `host` (the host's own echo request, its identifier
    /// held).
    pub kind: String,
    /// The tuple as the flow's first packet was sent.
    pub original: Tuple,
    /// The same packet after translation.
    pub translated: Tuple,
    pub state: FlowState,
    pub age_secs: u64,
    pub expires_in_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tuple {
    pub src: String,
    pub dst: String,
}
