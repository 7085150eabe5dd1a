//! Single-entry lookups in the IPv6 endpoint maps, for the restart's check
//! of each dual-stack endpoint (one lookup per map rather than a walk of
//! every entry, so the check stays linear in the number of endpoints).

use std::net::Ipv6Addr;

use aya::maps::MapError;
use dnet_common::{Endpoint, maps as m};

use super::{Datapath, Result, ip6, map_err};

/// `Ok(None)` for a missing key, as the kernel says it either way.
fn found<V>(r: std::result::Result<V, MapError>, name: &'static str) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(map_err(name)(e)),
    }
}

impl Datapath {
    /// The `ENDPOINTS6_BY_IP` entry of `addr`, if any.
    pub fn endpoint6(&self, addr: Ipv6Addr) -> Result<Option<Endpoint>> {
        let h = &self.maps.ep6_by_ip;
        found(h.get(&ip6(addr), 0), m::ENDPOINTS6_BY_IP)
    }

    /// The IPv6 address `ENDPOINT6_BY_IF` gives host-side veth `ifindex`.
    pub fn endpoint6_addr(&self, ifindex: u32) -> Result<Option<Ipv6Addr>> {
        let h = &self.maps.ep6_by_if;
        Ok(found(h.get(&ifindex, 0), m::ENDPOINT6_BY_IF)?.map(|e| Ipv6Addr::from(e.addr)))
    }
}
