//! The datapath's maps. Names come from `dnet_common::maps`; the daemon pins
//! them under its bpffs folder so they outlive it.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use dnet_common::{
    Config, Endpoint, Endpoint6, EndpointStats, Ip6, MemberKey, NetFanout, Network, Network6,
    Service, Service6, ServiceKey, ServiceKey6, SockRev, SockRev6, SockRevKey, SockRevKey6,
    maps::{
        MAX_ENDPOINTS, MAX_NETWORKS, MAX_PUBLISH_FROM, MAX_SERVICES, PROGS_SLOTS,
        SOCK_REVNAT_ENTRIES, STATS_SLOTS,
    },
};

#[map(name = "DNET_EP_BY_IP")]
pub static EP_BY_IP: HashMap<u32, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "DNET_EP_BY_IF")]
pub static EP_BY_IF: HashMap<u32, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "DNET_NETWORKS")]
pub static NETWORKS: Array<Network> = Array::with_max_entries(MAX_NETWORKS, 0);

#[map(name = "DNET_SUBNETS")]
pub static SUBNETS: LpmTrie<u32, u32> = LpmTrie::with_max_entries(MAX_NETWORKS, 0);

/// Dual-stack endpoints by IPv6 address (the endpoint's one record).
#[map(name = "DNET_EP6_BY_IP")]
pub static EP6_BY_IP: HashMap<Ip6, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// A dual-stack endpoint's IPv6 address by host-side veth ifindex.
#[map(name = "DNET_EP6_BY_IF")]
pub static EP6_BY_IF: HashMap<u32, Endpoint6> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// The IPv6 side of dual-stack networks, by network id.
#[map(name = "DNET_NETWORKS6")]
pub static NETWORKS6: Array<Network6> = Array::with_max_entries(MAX_NETWORKS, 0);

/// Which network an IPv6 subnet belongs to.
#[map(name = "DNET_SUBNETS6")]
pub static SUBNETS6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_NETWORKS, 0);

/// Programs the container program tail-calls (`PROG_SLOT_*`).
#[map(name = "DNET_PROGS")]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(PROGS_SLOTS, 0);

#[map(name = "DNET_NET_FANOUT")]
pub static NET_FANOUT: Array<NetFanout> = Array::with_max_entries(MAX_NETWORKS, 0);

#[map(name = "DNET_NET_MEMBER")]
pub static NET_MEMBER: HashMap<MemberKey, u32> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "DNET_STATS")]
pub static STATS: PerCpuArray<EndpointStats> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

#[map(name = "DNET_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Sources that may open flows to published ports from the world.
#[map(name = "DNET_PUBLISH_FROM")]
pub static PUBLISH_FROM: LpmTrie<u32, u8> = LpmTrie::with_max_entries(MAX_PUBLISH_FROM, 0);

#[map(name = "DNET_CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "DNET_SOCK_REVNAT")]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, SockRev> =
    LruHashMap::with_max_entries(SOCK_REVNAT_ENTRIES, 0);

/// Ports published over IPv6 (to dual-stack containers' IPv6 addresses).
#[map(name = "DNET_SERVICES6")]
pub static SERVICES6: HashMap<ServiceKey6, Service6> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DNET_SOCK_REVNAT6")]
pub static SOCK_REVNAT6: LruHashMap<SockRevKey6, SockRev6> =
    LruHashMap::with_max_entries(SOCK_REVNAT_ENTRIES, 0);

/// ICMP errors sent, as a token bucket per endpoint slot (slot 0: the
/// uplink) and CPU: when the next one is due (`icmp_reply`).
#[map(name = "DNET_ICMP_RATE")]
pub static ICMP_RATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Room to build an ICMP error in (one per CPU), off the stack.
#[map(name = "DNET_ICMP_SCRATCH")]
pub static ICMP_SCRATCH: PerCpuArray<crate::icmp_reply::IcmpScratch> =
    PerCpuArray::with_max_entries(1, 0);
