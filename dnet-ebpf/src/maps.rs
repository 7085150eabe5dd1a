//! The datapath's maps. Names come from `dnet_common::maps`; the daemon pins
//! them under its bpffs folder so they outlive it.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
};
use dnet_common::{
    Endpoint, EndpointStats, NetMembers, Network,
    maps::{MAX_ENDPOINTS, MAX_NETWORKS, STATS_SLOTS},
};

#[map(name = "DNET_EP_BY_IP")]
pub static EP_BY_IP: HashMap<u32, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "DNET_EP_BY_IF")]
pub static EP_BY_IF: HashMap<u32, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "DNET_NETWORKS")]
pub static NETWORKS: Array<Network> = Array::with_max_entries(MAX_NETWORKS, 0);

#[map(name = "DNET_SUBNETS")]
pub static SUBNETS: LpmTrie<u32, u32> = LpmTrie::with_max_entries(MAX_NETWORKS, 0);

#[map(name = "DNET_NET_MEMBERS")]
pub static NET_MEMBERS: Array<NetMembers> = Array::with_max_entries(MAX_NETWORKS, 0);

#[map(name = "DNET_STATS")]
pub static STATS: PerCpuArray<EndpointStats> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);
