//! dnet's IPAM for another runtime (Docker's `--ipam-driver`): pools and
//! addresses handed out before the runtime creates the network and its
//! endpoints, drawn by the same rules as dnet's own networks.
//!
//! A pool is known by its subnet. Until the runtime creates its network, a
//! pool is pending here (with its range and gateway); an address handed out
//! is reserved until the runtime releases it (its endpoint holds it by
//! then). Both live in memory only: an endpoint's address is in the state
//! once attached, and a pool becomes a network at once; what is lost in a
//! restart between the two steps is the runtime's retry to make again.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnetwork::Ipv4Network;

use super::{Engine, Inner, parse_ip, parse_net};
use crate::{
    api::NetworkCreate,
    conflict,
    error::Result,
    ipam::Pool,
    model::{Container, Network},
    not_found,
};

/// A pool handed out, not yet a network.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    range: Option<Ipv4Network>,
    gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Default)]
pub(super) struct RuntimeIpam {
    pending: BTreeMap<Ipv4Network, Pending>,
    reserved: BTreeMap<Ipv4Network, BTreeSet<Ipv4Addr>>,
    /// The runtime's networks whose addresses dnet's IPAM hands out (made
    /// from one of its pools, or so the runtime says): only there may
    /// dnet's own containers join. Learned again at each start.
    dnet_addressed: BTreeSet<String>,
}

impl Engine {
    /// A pool for a new network: `subnet` if given and free, else the next
    /// free one of dnet's default pools; `sub_pool` limits its dynamic
    /// addresses. Returns the subnet (the pool's id).
    pub async fn request_pool(
        &self,
        subnet: Option<&str>,
        sub_pool: Option<&str>,
    ) -> Result<Ipv4Network> {
        let mut inner = self.inner.lock().await;
        let range = sub_pool.map(|r| parse_net("ip-range", r)).transpose()?;
        // A repeat (the runtime retries) gets the same pool.
        if let Some(s) = subnet.map(|s| parse_net("subnet", s)).transpose()?
            && inner
                .runtime_ipam
                .pending
                .get(&s)
                .is_some_and(|p| p.range == range)
        {
            return Ok(s);
        }
        // Chosen and checked as a network's, the pools handed out taken too.
        // The runtime does not say which driver the pool is for: a subnet
        // dnet picks is a bridge's (away from every network and route); a
        // subnet given is checked against dnet's networks and pools here,
        // and against what depends on the driver when the network is made
        // (a bridge's subnet must not overlap a route where the daemon
        // runs; a macvlan's is its parent's LAN, routed there).
        let held: Vec<Ipv4Network> = inner.runtime_ipam.pending.keys().copied().collect();
        let req = NetworkCreate {
            subnet: subnet.map(str::to_owned),
            ip_range: sub_pool.map(str::to_owned),
            ..NetworkCreate::default()
        };
        let ipam = inner.choose_ipam(&req, None, &held).await?;
        inner.runtime_ipam.pending.insert(
            ipam.subnet,
            Pending {
                range,
                gateway: None,
            },
        );
        Ok(ipam.subnet)
    }

    /// Forgets a pool handed out (its network, if any, goes on its own).
    pub async fn release_pool(&self, pool: &str) -> Result<()> {
        let subnet = parse_net("pool id", pool)?;
        let mut inner = self.inner.lock().await;
        inner.runtime_ipam.pending.remove(&subnet);
        inner.runtime_ipam.reserved.remove(&subnet);
        Ok(())
    }

    /// The range a pending pool was asked with.
    pub async fn pool_range(&self, subnet: &str) -> Option<Ipv4Network> {
        let subnet: Ipv4Network = subnet.parse().ok()?;
        let inner = self.inner.lock().await;
        inner
            .runtime_ipam
            .pending
            .get(&subnet)
            .and_then(|p| p.range)
    }

    /// An address of `pool`: the gateway (`gateway`: `requested`, else the
    /// first host), or an endpoint's (`requested` if free, else the lowest
    /// free one of the range), reserved until released.
    pub async fn request_address(
        &self,
        pool: &str,
        requested: Option<&str>,
        gateway: bool,
    ) -> Result<(Ipv4Addr, u8)> {
        let subnet = parse_net("pool id", pool)?;
        let requested = requested.map(|a| parse_ip("address", a)).transpose()?;
        let mut inner = self.inner.lock().await;
        let net = inner
            .state
            .networks
            .values()
            .find(|n| n.ipam.is_some_and(|i| i.subnet == subnet))
            .cloned();
        let pending = inner.runtime_ipam.pending.get(&subnet).copied();
        let (range, gw) = match (&net, pending) {
            (Some(n), _) => {
                let i = n.ipam.expect("found by its ipam");
                (i.ip_range, Some(i.gateway))
            }
            (None, Some(p)) => (p.range, p.gateway),
            (None, None) => return Err(not_found!("dnet handed out no pool {subnet}")),
        };
        if gateway {
            let pool = Pool::new(subnet, requested.or(gw), range)?;
            if net.is_none() {
                inner
                    .runtime_ipam
                    .pending
                    .entry(subnet)
                    .or_default()
                    .gateway = Some(pool.gateway);
            }
            return Ok((pool.gateway, subnet.prefix()));
        }
        let pool = Pool::new(subnet, gw, range)?;
        let mut used = net
            .as_ref()
            .map(|n| inner.state.used_addresses(&n.id))
            .unwrap_or_default();
        used.extend(
            inner
                .runtime_ipam
                .reserved
                .get(&subnet)
                .into_iter()
                .flatten()
                .copied(),
        );
        let ip = pool.allocate(&used, requested)?;
        inner
            .runtime_ipam
            .reserved
            .entry(subnet)
            .or_default()
            .insert(ip);
        Ok((ip, subnet.prefix()))
    }

    /// Ends the reservation of an address (none is success: a repeat).
    pub async fn release_address(&self, pool: &str, addr: &str) -> Result<()> {
        let subnet = parse_net("pool id", pool)?;
        let ip = parse_ip("address", addr.split_once('/').map_or(addr, |(a, _)| a))?;
        let mut inner = self.inner.lock().await;
        if let Some(r) = inner.runtime_ipam.reserved.get_mut(&subnet) {
            r.remove(&ip);
        }
        Ok(())
    }
}

impl Inner {
    /// A network made from a pending pool: it is a network now. Was it one?
    pub(super) fn pool_became_network(&mut self, subnet: Ipv4Network) -> bool {
        self.runtime_ipam.pending.remove(&subnet).is_some()
    }

    /// The network `id` (a runtime's) has dnet's addresses.
    pub(super) fn addressed_by_dnet(&mut self, id: &str) {
        self.runtime_ipam.dnet_addressed.insert(id.to_owned());
    }

    /// Refuses an endpoint of dnet's own (or of another runtime) on a
    /// network whose addresses the runtime that made it hands out (Docker's
    /// default IPAM). That IPAM does not know dnet's addresses: without
    /// `--ip-range` it hands out the whole subnet, and with one the rest of
    /// the subnet is where `docker run --ip` addresses go. Any address dnet
    /// took there could be given to a Docker container later, which would
    /// then fail to start. A Docker user expects Docker's IPAM to own a
    /// Docker network's addresses; `--ipam-driver dnet` makes dnet's the
    /// one IPAM of the network, and then both may attach.
    pub(super) fn check_runtime_addressing(&self, net: &Network, c: &Container) -> Result<()> {
        let Some(owner) = &net.runtime else {
            return Ok(());
        };
        let runtime_own = c
            .runtime
            .as_ref()
            .is_some_and(|r| r.runtime == owner.runtime);
        if runtime_own || self.runtime_ipam.dnet_addressed.contains(&net.id) {
            return Ok(());
        }
        Err(conflict!(
            "network {} is {}'s and {}'s IPAM hands out its addresses, which does not know dnet's: attach containers with `{} run --network {}`, or make the network with `--ipam-driver` set to dnet's driver so that dnet's containers may join it too",
            net.name,
            owner.runtime,
            owner.runtime,
            owner.runtime,
            net.name
        ))
    }
}
