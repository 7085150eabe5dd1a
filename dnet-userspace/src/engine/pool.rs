//! What the two families share when a network's addresses are chosen: the
//! gateway and range given as text, the pool they make, and its subnet
//! checked against the other networks' and the routes where the daemon
//! runs.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{parse_ip, parse_ip6, parse_net, parse_net6};
use crate::{
    conflict,
    error::Result,
    ipam::{Pool, Pool6},
    model::{Ipam, Ipam6},
};

/// A subnet of one family, with what the choice of a network's addresses
/// needs of it.
pub(super) trait Subnet: Copy + fmt::Display {
    type Addr;
    /// The network's addressing of this family, as stored.
    type Ipam;
    /// Before "subnet" in messages: "" or "IPv6 ".
    const FAMILY: &'static str;
    fn parse_net(what: &str, s: &str) -> Result<Self>;
    fn parse_ip(what: &str, s: &str) -> Result<Self::Addr>;
    fn overlaps(self, other: Self) -> bool;
    /// The pool checked (`Pool::new`), as stored: the range only if given.
    fn ipam(subnet: Self, gateway: Option<Self::Addr>, range: Option<Self>) -> Result<Self::Ipam>;
}

impl Subnet for Ipv4Network {
    type Addr = Ipv4Addr;
    type Ipam = Ipam;
    const FAMILY: &'static str = "";
    fn parse_net(what: &str, s: &str) -> Result<Self> {
        parse_net(what, s)
    }
    fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
        parse_ip(what, s)
    }
    fn overlaps(self, other: Self) -> bool {
        Ipv4Network::overlaps(self, other)
    }
    fn ipam(subnet: Self, gateway: Option<Ipv4Addr>, range: Option<Self>) -> Result<Ipam> {
        let pool = Pool::new(subnet, gateway, range)?;
        Ok(Ipam {
            subnet: pool.subnet,
            gateway: pool.gateway,
            ip_range: range.map(|_| pool.range),
        })
    }
}

impl Subnet for Ipv6Network {
    type Addr = Ipv6Addr;
    type Ipam = Ipam6;
    const FAMILY: &'static str = "IPv6 ";
    fn parse_net(what: &str, s: &str) -> Result<Self> {
        parse_net6(what, s)
    }
    fn parse_ip(what: &str, s: &str) -> Result<Ipv6Addr> {
        parse_ip6(what, s)
    }
    fn overlaps(self, other: Self) -> bool {
        Ipv6Network::overlaps(self, other)
    }
    fn ipam(subnet: Self, gateway: Option<Ipv6Addr>, range: Option<Self>) -> Result<Ipam6> {
        let pool = Pool6::new(subnet, gateway, range)?;
        Ok(Ipam6 {
            subnet: pool.subnet,
            gateway: pool.gateway,
            ip_range: range.map(|_| pool.range),
        })
    }
}

/// A new network's addressing of one family: `gateway` and `ip_range` (as
/// given) parsed, the pool checked, and `subnet` refused where it overlaps
/// one of `others` (what holds it, as messages name it) or of the `routes`
/// where the daemon runs.
pub(super) fn choose<N: Subnet>(
    subnet: N,
    gateway: Option<&str>,
    ip_range: Option<&str>,
    others: &[(String, N)],
    routes: &[N],
) -> Result<N::Ipam> {
    let gateway = gateway.map(|g| N::parse_ip("gateway", g)).transpose()?;
    let range = ip_range.map(|r| N::parse_net("ip-range", r)).transpose()?;
    let ipam = N::ipam(subnet, gateway, range)?;
    let family = N::FAMILY;
    if let Some((what, s)) = others.iter().find(|(_, s)| s.overlaps(subnet)) {
        return Err(conflict!("{family}subnet {subnet} overlaps {s} of {what}"));
    }
    if let Some(r) = routes.iter().find(|r| r.overlaps(subnet)) {
        return Err(conflict!(
            "{family}subnet {subnet} overlaps the route to {r} where the daemon runs"
        ));
    }
    Ok(ipam)
}
