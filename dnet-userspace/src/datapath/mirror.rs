//! The endpoint maps by interface, and each network's broadcast members,
//! as this process last wrote them, kept in memory.
//!
//! Only userspace writes these maps, and only through [`Datapath`]: after
//! one read at first use (pinned maps outlive a daemon), the copy answers
//! "which interfaces carry this address" and "which interfaces belong to
//! this network" with no walk of the maps, which took two syscalls per
//! endpoint at every attach and detach (with 1,000 endpoints, most of what
//! made the 1,000th attach slower than the first). A write that fails
//! drops the copy, so the next use reads the maps again.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use dnet_common::{Endpoint, addr::ipv4_be, maps as m};

use super::{Datapath, Result};

#[derive(Default)]
pub(super) struct Mirror {
    /// `ENDPOINTS_BY_IF`: host-side veth ifindex → entry.
    by_if: HashMap<u32, Endpoint>,
    /// `ENDPOINT6_BY_IF`: host-side veth ifindex → IPv6 address.
    addr6_by_if: HashMap<u32, Ipv6Addr>,
}

impl Datapath {
    fn mirror(&mut self) -> Result<&mut Mirror> {
        if self.mirror.is_none() {
            let by_if = self.endpoints(m::ENDPOINTS_BY_IF)?.into_iter().collect();
            let addr6_by_if = self.endpoint6_addrs()?.into_iter().collect();
            self.mirror = Some(Mirror { by_if, addr6_by_if });
        }
        Ok(self.mirror.as_mut().expect("filled above"))
    }

    /// Keeps the copy in line with a write of the maps that returned
    /// `r`: `f` applies a write that succeeded; a failed one may have
    /// written part, so the copy goes.
    pub(super) fn mirrored<T>(&mut self, r: Result<T>, f: impl FnOnce(&mut Mirror)) -> Result<T> {
        match (&r, self.mirror.as_mut()) {
            (Ok(_), Some(mirror)) => f(mirror),
            (Err(_), _) => self.mirror = None,
            (Ok(_), None) => {}
        }
        r
    }

    /// Host-side veths whose `ENDPOINTS_BY_IF` entry is of network `dp_id`,
    /// in ifindex order.
    pub fn network_ifindexes(&mut self, dp_id: u32) -> Result<Vec<u32>> {
        let mut v: Vec<u32> = self
            .mirror()?
            .by_if
            .iter()
            .filter(|(_, e)| e.net_id == dp_id)
            .map(|(i, _)| *i)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Host-side veths whose `ENDPOINTS_BY_IF` entry has address `addr`.
    pub fn ifindexes_with(&mut self, addr: Ipv4Addr) -> Result<Vec<u32>> {
        let addr = ipv4_be(addr);
        Ok(self
            .mirror()?
            .by_if
            .iter()
            .filter(|(_, e)| e.addr_be == addr)
            .map(|(i, _)| *i)
            .collect())
    }

    /// Host-side veths whose `ENDPOINT6_BY_IF` entry has address `addr`.
    pub fn ifindexes_with6(&mut self, addr: Ipv6Addr) -> Result<Vec<u32>> {
        Ok(self
            .mirror()?
            .addr6_by_if
            .iter()
            .filter(|(_, a)| **a == addr)
            .map(|(i, _)| *i)
            .collect())
    }
}

impl Mirror {
    pub(super) fn set(&mut self, ep: &Endpoint) {
        self.by_if.insert(ep.ifindex, *ep);
    }

    pub(super) fn clear(&mut self, ifindex: Option<u32>) {
        if let Some(i) = ifindex {
            self.by_if.remove(&i);
        }
    }

    pub(super) fn set6(&mut self, ifindex: u32, addr: Ipv6Addr) {
        self.addr6_by_if.insert(ifindex, addr);
    }

    pub(super) fn clear6(&mut self, ifindex: Option<u32>) {
        if let Some(i) = ifindex {
            self.addr6_by_if.remove(&i);
        }
    }
}
