//! Addresses of networks: the subnets of a new network, chosen and checked
//! against the other networks and the routes where the daemon runs, and
//! dnet's IPAM for another runtime (Docker's `--ipam-driver`): pools and
//! addresses handed out before the runtime creates the network and its
//! endpoints, drawn by the same rules as dnet's own networks, for IPv4 and
//! IPv6 (`docker network create --ipv6`) alike.
//!
//! A pool is known by its subnet. Until the runtime creates its network, a
//! pool is pending here (with its range and gateway); an address handed out
//! is reserved until the runtime releases it (its endpoint holds it by
//! then). Both live in memory only: an endpoint's address is in the state
//! once attached, and a pool becomes a network at once; what is lost in a
//! restart between the two steps is the runtime's retry to make again. A
//! network made from a pool is marked so in the state.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{Engine, Inner, parse_ip, parse_ip6, parse_net, parse_net6, pool};
use crate::{
    api::NetworkCreate,
    conflict, driver,
    error::Result,
    invalid,
    ipam::{self, Pool, Pool6},
    model::{Container, DriverKind, Ipam, Ipam6, Network},
    netlink::{Family, markers},
    not_found,
};

/// A pool handed out, not yet a network.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    range: Option<IpNetwork>,
    gateway: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub(super) struct RuntimeIpam {
    pending: BTreeMap<IpNetwork, Pending>,
    reserved: BTreeMap<IpNetwork, BTreeSet<IpAddr>>,
}

/// A pool's id: its subnet, of either family.
fn parse_pool(pool: &str) -> Result<IpNetwork> {
    if pool.contains(':') {
        Ok(IpNetwork::V6(parse_net6("pool id", pool)?))
    } else {
        Ok(IpNetwork::V4(parse_net("pool id", pool)?))
    }
}

/// An address of the pool `subnet`'s family.
fn parse_addr(subnet: IpNetwork, what: &str, a: &str) -> Result<IpAddr> {
    match subnet {
        IpNetwork::V4(_) => Ok(IpAddr::V4(parse_ip(what, a)?)),
        IpNetwork::V6(_) => Ok(IpAddr::V6(parse_ip6(what, a)?)),
    }
}

/// An address family whose routes a new network's subnet must not clash
/// with.
trait Routed: Family {
    type Net: Copy;
    fn network(dst: Self, prefix: u8) -> Option<Self::Net>;
    /// Routed everywhere, never a network's (IPv6 link-local, multicast).
    fn special(n: Self::Net) -> bool;
}

impl Routed for Ipv4Addr {
    type Net = Ipv4Network;
    fn network(dst: Self, prefix: u8) -> Option<Ipv4Network> {
        Ipv4Network::new(dst, prefix).ok()
    }
    fn special(_: Ipv4Network) -> bool {
        false
    }
}

impl Routed for Ipv6Addr {
    type Net = Ipv6Network;
    fn network(dst: Self, prefix: u8) -> Option<Ipv6Network> {
        Ipv6Network::new(dst, prefix).ok()
    }
    fn special(n: Ipv6Network) -> bool {
        const LINK_LOCAL: Ipv6Network =
            Ipv6Network::new_checked(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
                .expect("a valid prefix");
        const MULTICAST: Ipv6Network =
            Ipv6Network::new_checked(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8)
                .expect("a valid prefix");
        LINK_LOCAL.overlaps(n) || MULTICAST.overlaps(n)
    }
}

impl Engine {
    /// A pool for a new network: `subnet` if given and free, else the next
    /// free one of dnet's default pools (IPv6: a /64 of the host's ULA
    /// /48); `sub_pool` limits its dynamic addresses. Returns the subnet
    /// (the pool's id).
    pub async fn request_pool(
        &self,
        subnet: Option<&str>,
        sub_pool: Option<&str>,
        v6: bool,
    ) -> Result<IpNetwork> {
        let mut inner = self.inner.lock().await;
        let parse = |what, s| match v6 {
            false => parse_net(what, s).map(IpNetwork::V4),
            true => parse_net6(what, s).map(IpNetwork::V6),
        };
        let range = sub_pool.map(|r| parse("ip-range", r)).transpose()?;
        // A repeat (the runtime retries) gets the same pool.
        if let Some(s) = subnet.map(|s| parse("subnet", s)).transpose()?
            && inner
                .runtime_ipam
                .pending
                .get(&s)
                .is_some_and(|p| p.range == range)
        {
            return Ok(s);
        }
        // Chosen and checked as a network's, the pools handed out taken too.
        let held = inner.runtime_ipam.pending.keys().copied();
        // The runtime does not say which driver the pool is for: a subnet
        // dnet picks is a bridge's (away from every network and route); a
        // subnet given is checked against dnet's networks and pools here,
        // and against what depends on the driver when the network is made
        // (a bridge's subnet must not overlap a route where the daemon
        // runs; a macvlan's is its parent's LAN, routed there). The same
        // for both families.
        let subnet = if v6 {
            let held: Vec<Ipv6Network> = held
                .filter_map(|n| match n {
                    IpNetwork::V6(n) => Some(n),
                    IpNetwork::V4(_) => None,
                })
                .collect();
            let req = NetworkCreate {
                ipv6: true,
                subnet6: subnet.map(str::to_owned),
                ip_range6: sub_pool.map(str::to_owned),
                ..NetworkCreate::default()
            };
            let (ipam6, ula48) = inner.choose_ipam6(&req, None, &held).await?;
            let ipam6 = ipam6.expect("an IPv6 request has an IPv6 side");
            if ula48.is_some() {
                // The /48 later pools and networks come from.
                let mut st = inner.state.clone();
                st.ula48 = ula48;
                inner.commit(st)?;
            }
            IpNetwork::V6(ipam6.subnet)
        } else {
            let held: Vec<Ipv4Network> = held
                .filter_map(|n| match n {
                    IpNetwork::V4(n) => Some(n),
                    IpNetwork::V6(_) => None,
                })
                .collect();
            let req = NetworkCreate {
                subnet: subnet.map(str::to_owned),
                ip_range: sub_pool.map(str::to_owned),
                ..NetworkCreate::default()
            };
            IpNetwork::V4(inner.choose_ipam(&req, None, &held).await?.subnet)
        };
        inner.runtime_ipam.pending.insert(
            subnet,
            Pending {
                range,
                gateway: None,
            },
        );
        Ok(subnet)
    }

    /// Forgets a pool handed out (its network, if any, goes on its own).
    pub async fn release_pool(&self, pool: &str) -> Result<()> {
        let subnet = parse_pool(pool)?;
        let mut inner = self.inner.lock().await;
        inner.runtime_ipam.pending.remove(&subnet);
        inner.runtime_ipam.reserved.remove(&subnet);
        Ok(())
    }

    /// The range a pending pool was asked with.
    pub async fn pool_range(&self, subnet: &str) -> Option<IpNetwork> {
        let subnet = parse_pool(subnet).ok()?;
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
    ) -> Result<(IpAddr, u8)> {
        let subnet = parse_pool(pool)?;
        let requested = requested
            .map(|a| parse_addr(subnet, "address", a))
            .transpose()?;
        let mut inner = self.inner.lock().await;
        let net = inner
            .state
            .networks
            .values()
            .find(|n| match subnet {
                IpNetwork::V4(s) => n.ipam.is_some_and(|i| i.subnet == s),
                IpNetwork::V6(s) => n.ipam6.is_some_and(|i| i.subnet == s),
            })
            .cloned();
        // What the network's driver keeps for itself (a LAN's parent's
        // addresses): the runtime asks before the endpoint is made.
        let reserved = match &net {
            Some(n) if !gateway => driver::driver(n.driver).reserved(&inner.ctx, n).await?,
            _ => driver::Reserved::default(),
        };
        let pending = inner.runtime_ipam.pending.get(&subnet).copied();
        let (range, gw) = match (&net, pending) {
            (Some(n), _) => match subnet {
                IpNetwork::V4(_) => {
                    let i = n.ipam.expect("found by its ipam");
                    (i.ip_range.map(IpNetwork::V4), Some(IpAddr::V4(i.gateway)))
                }
                IpNetwork::V6(_) => {
                    let i = n.ipam6.expect("found by its ipam6");
                    (i.ip_range.map(IpNetwork::V6), Some(IpAddr::V6(i.gateway)))
                }
            },
            (None, Some(p)) => (p.range, p.gateway),
            (None, None) => return Err(not_found!("dnet handed out no pool {subnet}")),
        };
        let used = |inner: &Inner| -> BTreeSet<IpAddr> {
            let mut used: BTreeSet<IpAddr> = match (&net, subnet) {
                (Some(n), IpNetwork::V4(_)) => inner
                    .state
                    .used_addresses(&n.id)
                    .into_iter()
                    .map(IpAddr::V4)
                    .collect(),
                (Some(n), IpNetwork::V6(_)) => inner
                    .state
                    .used_addresses6(&n.id)
                    .into_iter()
                    .map(IpAddr::V6)
                    .collect(),
                (None, _) => BTreeSet::new(),
            };
            used.extend(reserved.v4.iter().copied().map(IpAddr::V4));
            used.extend(reserved.v6.iter().copied().map(IpAddr::V6));
            used.extend(
                inner
                    .runtime_ipam
                    .reserved
                    .get(&subnet)
                    .into_iter()
                    .flatten()
                    .copied(),
            );
            used
        };
        let ip = match subnet {
            IpNetwork::V4(s) => {
                let v4 = |a: Option<IpAddr>| match a {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                };
                let range = match range {
                    Some(IpNetwork::V4(r)) => Some(r),
                    _ => None,
                };
                let pool = Pool::new(s, v4(requested.or(gw)), range)?;
                if gateway {
                    IpAddr::V4(pool.gateway)
                } else {
                    let pool = Pool::new(s, v4(gw), range)?;
                    let used = used(&inner)
                        .into_iter()
                        .filter_map(|a| v4(Some(a)))
                        .collect();
                    IpAddr::V4(pool.allocate(&used, v4(requested))?)
                }
            }
            IpNetwork::V6(s) => {
                let v6 = |a: Option<IpAddr>| match a {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                };
                let range = match range {
                    Some(IpNetwork::V6(r)) => Some(r),
                    _ => None,
                };
                if gateway {
                    IpAddr::V6(Pool6::new(s, v6(requested.or(gw)), range)?.gateway)
                } else {
                    let pool = Pool6::new(s, v6(gw), range)?;
                    let used = used(&inner)
                        .into_iter()
                        .filter_map(|a| v6(Some(a)))
                        .collect();
                    IpAddr::V6(pool.allocate(&used, v6(requested))?)
                }
            }
        };
        if gateway {
            if net.is_none() {
                inner
                    .runtime_ipam
                    .pending
                    .entry(subnet)
                    .or_default()
                    .gateway = Some(ip);
            }
        } else {
            inner
                .runtime_ipam
                .reserved
                .entry(subnet)
                .or_default()
                .insert(ip);
        }
        Ok((ip, subnet.prefix()))
    }

    /// Ends the reservation of an address (none is success: a repeat).
    pub async fn release_address(&self, pool: &str, addr: &str) -> Result<()> {
        let subnet = parse_pool(pool)?;
        let ip = parse_addr(
            subnet,
            "address",
            addr.split_once('/').map_or(addr, |(a, _)| a),
        )?;
        let mut inner = self.inner.lock().await;
        if let Some(r) = inner.runtime_ipam.reserved.get_mut(&subnet) {
            r.remove(&ip);
        }
        Ok(())
    }
}

impl Inner {
    /// `subnet` is a pool dnet's IPAM handed out that is no network yet.
    pub(super) fn is_pending_pool(&self, subnet: Ipv4Network) -> bool {
        self.runtime_ipam
            .pending
            .contains_key(&IpNetwork::V4(subnet))
    }

    /// A network made from pending pools: they are a network now. Was it
    /// made from one?
    pub(super) fn pools_became_network(&mut self, net: &Network) -> bool {
        let v4 = net.ipam.is_some_and(|i| {
            self.runtime_ipam
                .pending
                .remove(&IpNetwork::V4(i.subnet))
                .is_some()
        });
        let v6 = net.ipam6.is_some_and(|i| {
            self.runtime_ipam
                .pending
                .remove(&IpNetwork::V6(i.subnet))
                .is_some()
        });
        v4 || v6
    }

    /// The network `id` (a runtime's) has dnet's addresses: marked so in the
    /// state.
    pub(super) fn addressed_by_dnet(&mut self, id: &str) -> Result<()> {
        if self.state.networks.get(id).is_none_or(|n| n.runtime_ipam) {
            return Ok(());
        }
        let mut st = self.state.clone();
        st.networks.get_mut(id).expect("present").runtime_ipam = true;
        self.commit(st)
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
        if runtime_own || net.runtime_ipam {
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

    /// Subnets of family `A` routed where the daemon runs (its own routes,
    /// the default route, and IPv6 link-local and multicast aside).
    async fn routed_subnets<A: Routed>(&self) -> Result<Vec<A::Net>> {
        Ok(self
            .ctx
            .nl
            .routes_of::<A>()
            .await?
            .into_iter()
            .filter(|r| r.table == 254 && r.prefix > 0 && !markers::is_dnet_route(r.protocol))
            .filter_map(|r| A::network(r.dst, r.prefix))
            .filter(|n| !A::special(*n))
            .collect())
    }

    /// What a new network's subnet of family `A` (`subnet_of` a network)
    /// must not overlap: the other networks' (and what holds them, as
    /// messages name it), the pools `held` for another runtime's networks,
    /// and the routes where the daemon runs. For a LAN's subnet (`lan`, a
    /// macvlan network's) neither the other LANs' subnets, which their
    /// driver checks (it knows their parents and says so), nor the routes:
    /// the parent's route to it is expected, not a clash.
    async fn taken<A: Routed>(
        &self,
        lan: bool,
        held: &[A::Net],
        subnet_of: impl Fn(&Network) -> Option<A::Net>,
    ) -> Result<(Vec<(String, A::Net)>, Vec<A::Net>)> {
        let mut others: Vec<(String, A::Net)> = self
            .state
            .networks
            .values()
            .filter(|n| !(lan && driver::caps(n.driver).lan_subnet))
            .filter_map(|n| subnet_of(n).map(|s| (format!("network {:?}", n.name), s)))
            .collect();
        others.extend(held.iter().map(|s| ("a pool handed out".to_owned(), *s)));
        let routes = if lan {
            Vec::new()
        } else {
            self.routed_subnets::<A>().await?
        };
        Ok((others, routes))
    }

    /// The subnet, gateway and range of a new network of `kind`, checked
    /// against the other networks, the pools `held` for another runtime's
    /// networks (dnet's IPAM for Docker) and the routes where the daemon
    /// runs. Without a kind (a runtime's pool, whose driver is not said), a
    /// subnet given is taken as a LAN's and one picked as a host's own.
    pub(super) async fn choose_ipam(
        &self,
        req: &NetworkCreate,
        kind: Option<DriverKind>,
        held: &[Ipv4Network],
    ) -> Result<Ipam> {
        let lan = match kind {
            Some(k) => driver::caps(k).lan_subnet,
            None => req.subnet.is_some(),
        };
        let (others, routes) = self
            .taken::<Ipv4Addr>(lan, held, |n| n.ipam.map(|i| i.subnet))
            .await?;
        let subnet = match &req.subnet {
            Some(s) => parse_net("subnet", s)?,
            None => {
                if req.gateway.is_some() || req.ip_range.is_some() {
                    return Err(invalid!("--gateway and --ip-range need --subnet"));
                }
                if let Some(kind) = kind.filter(|_| lan) {
                    return Err(invalid!(
                        "a {kind} network needs --subnet (the parent LAN's)"
                    ));
                }
                let mut taken: Vec<Ipv4Network> = others.iter().map(|(_, s)| *s).collect();
                taken.extend(&routes);
                ipam::next_free_subnet(&taken).ok_or_else(|| {
                    conflict!("no free subnet left in the default pools: give --subnet")
                })?
            }
        };
        pool::choose(
            subnet,
            req.gateway.as_deref(),
            req.ip_range.as_deref(),
            &others,
            &routes,
        )
    }

    /// The IPv6 side of a new network (`None`: IPv4 only), and the ULA /48
    /// when this is the first time one is chosen (to be committed with it).
    /// `held`: the IPv6 pools handed out for another runtime's networks;
    /// without a kind, a pool for such a network (the runtime does not say
    /// its driver: the network must then be one that can be dual-stack).
    pub(super) async fn choose_ipam6(
        &self,
        req: &NetworkCreate,
        kind: Option<DriverKind>,
        held: &[Ipv6Network],
    ) -> Result<(Option<Ipam6>, Option<Ipv6Network>)> {
        if !req.ipv6 {
            if let Some(s) = req.subnet6.as_ref().or(req.gateway6.as_ref()) {
                return Err(invalid!(
                    "{s} is an IPv6 address: an IPv6 subnet or gateway needs --ipv6"
                ));
            }
            if let Some(r) = &req.ip_range6 {
                return Err(invalid!(
                    "{r} is an IPv6 range: an IPv6 --ip-range needs --ipv6"
                ));
            }
            return Ok((None, None));
        }
        if let Some(kind) = kind
            && !driver::caps(kind).ipv6
        {
            return Err(invalid!(
                "--ipv6 is supported on bridge and macvlan networks only (not {kind})"
            ));
        }
        // As for IPv4: a LAN's subnet is given, and a runtime's pool (no
        // kind) is taken as a LAN's when it is given.
        let lan = match kind {
            Some(k) => driver::caps(k).lan_subnet,
            None => req.subnet6.is_some(),
        };
        let (others, routes) = self
            .taken::<Ipv6Addr>(lan, held, |n| n.ipam6.map(|i| i.subnet))
            .await?;
        let mut new_ula = None;
        let subnet = match &req.subnet6 {
            Some(s) => parse_net6("subnet", s)?,
            None => {
                if req.gateway6.is_some() || req.ip_range6.is_some() {
                    return Err(invalid!(
                        "an IPv6 --gateway or --ip-range needs an IPv6 --subnet"
                    ));
                }
                if let Some(kind) = kind.filter(|_| lan) {
                    return Err(invalid!(
                        "a dual-stack {kind} network needs an IPv6 --subnet (the parent LAN's): dnet picks none for a LAN"
                    ));
                }
                let ula = match self.state.ula48 {
                    Some(u) => u,
                    None => *new_ula.insert(ipam::random_ula48()),
                };
                let mut taken: Vec<Ipv6Network> = others.iter().map(|(_, s)| *s).collect();
                taken.extend(&routes);
                ipam::next_free_subnet6(ula, &taken)
                    .ok_or_else(|| conflict!("no free /64 left in {ula}: give an IPv6 --subnet"))?
            }
        };
        let ipam6 = pool::choose(
            subnet,
            req.gateway6.as_deref(),
            req.ip_range6.as_deref(),
            &others,
            &routes,
        )?;
        Ok((Some(ipam6), new_ula))
    }
}
