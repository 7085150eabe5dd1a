//! The maps userspace reads and writes, each taken once from the loaded
//! object with its key and value types (aya's `take_map`), rather than
//! looked up by name and checked at every use.

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use dnet_common::{
    Config, CtEntry, CtEntry6, CtKey, CtKey6, Endpoint, Endpoint6, EndpointStats, Ip6, MemberKey,
    NetFanout, Network, Network6, QuotaKey, Service, Service6, ServiceKey, ServiceKey6, maps as m,
};

use super::{DatapathError, Result, map_err};

/// The typed maps (the socket hooks' maps and the tail-call array are not
/// here: userspace never reads them after the load).
pub struct Maps {
    /// `ENDPOINTS_BY_IP`: endpoints by IPv4 address (network order).
    pub ep_by_ip: HashMap<MapData, u32, Endpoint>,
    /// `ENDPOINTS_BY_IF`: endpoints by host-side veth ifindex.
    pub ep_by_if: HashMap<MapData, u32, Endpoint>,
    pub networks: Array<MapData, Network>,
    pub subnets: LpmTrie<MapData, u32, u32>,
    pub net_fanout: Array<MapData, NetFanout>,
    pub net_member: HashMap<MapData, MemberKey, u32>,
    pub stats: PerCpuArray<MapData, EndpointStats>,
    pub ct: HashMap<MapData, CtKey, CtEntry>,
    pub ct6: HashMap<MapData, CtKey6, CtEntry6>,
    pub ct_opened: PerCpuHashMap<MapData, QuotaKey, i64>,
    pub ct_closed: HashMap<MapData, QuotaKey, i64>,
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub services6: HashMap<MapData, ServiceKey6, Service6>,
    pub config: Array<MapData, Config>,
    pub publish_from: LpmTrie<MapData, u32, u8>,
    pub publish_from6: LpmTrie<MapData, [u8; 16], u8>,
    pub ep6_by_ip: HashMap<MapData, Ip6, Endpoint>,
    pub ep6_by_if: HashMap<MapData, u32, Endpoint6>,
    pub networks6: Array<MapData, Network6>,
    pub subnets6: LpmTrie<MapData, [u8; 16], u32>,
}

/// Takes map `name` out of `ebpf` as a `T`.
fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T> {
    let map = ebpf.take_map(name).ok_or(DatapathError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl Maps {
    /// Takes the maps out of a loaded object (its programs keep their own
    /// references to them).
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            ep_by_ip: take(ebpf, m::ENDPOINTS_BY_IP)?,
            ep_by_if: take(ebpf, m::ENDPOINTS_BY_IF)?,
            networks: take(ebpf, m::NETWORKS)?,
            subnets: take(ebpf, m::SUBNETS)?,
            net_fanout: take(ebpf, m::NET_FANOUT)?,
            net_member: take(ebpf, m::NET_MEMBER)?,
            stats: take(ebpf, m::STATS)?,
            ct: take(ebpf, m::CT)?,
            ct6: take(ebpf, m::CT6)?,
            ct_opened: take(ebpf, m::CT_OPENED)?,
            ct_closed: take(ebpf, m::CT_CLOSED)?,
            services: take(ebpf, m::SERVICES)?,
            services6: take(ebpf, m::SERVICES6)?,
            config: take(ebpf, m::CONFIG)?,
            publish_from: take(ebpf, m::PUBLISH_FROM)?,
            publish_from6: take(ebpf, m::PUBLISH_FROM6)?,
            ep6_by_ip: take(ebpf, m::ENDPOINTS6_BY_IP)?,
            ep6_by_if: take(ebpf, m::ENDPOINT6_BY_IF)?,
            networks6: take(ebpf, m::NETWORKS6)?,
            subnets6: take(ebpf, m::SUBNETS6)?,
        })
    }

    /// An IPv4 endpoint map by its name (`ENDPOINTS_BY_IP` or
    /// `ENDPOINTS_BY_IF`).
    pub fn endpoints(&self, name: &'static str) -> Result<&HashMap<MapData, u32, Endpoint>> {
        match name {
            m::ENDPOINTS_BY_IP => Ok(&self.ep_by_ip),
            m::ENDPOINTS_BY_IF => Ok(&self.ep_by_if),
            _ => Err(DatapathError::Missing(name)),
        }
    }
}
