//! IP address management: a network's pool and the choice of an address.
//!
//! Pure logic: the caller passes the addresses in use (derived from the
//! endpoints in the state, so allocations persist with them).

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("invalid subnet {subnet}: host bits are set (did you mean {network}/{prefix}?)")]
    HostBitsSet {
        subnet: Ipv4Network,
        network: Ipv4Addr,
        prefix: u8,
    },
    #[error("invalid subnet {0}: a network needs a prefix of /30 or shorter")]
    TooSmall(Ipv4Network),
    #[error("gateway {gateway} is not a usable address of subnet {subnet}")]
    GatewayOutside {
        gateway: Ipv4Addr,
        subnet: Ipv4Network,
    },
    #[error("ip-range {range} is not inside subnet {subnet}")]
    RangeOutside {
        range: Ipv4Network,
        subnet: Ipv4Network,
    },
    #[error("address {ip} is not a usable address of subnet {subnet}")]
    AddressOutside { ip: Ipv4Addr, subnet: Ipv4Network },
    #[error("address {0} is the network's gateway")]
    AddressIsGateway(Ipv4Addr),
    #[error("address {0} is already in use")]
    AddressInUse(Ipv4Addr),
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Network),
}

/// A network's addresses: the subnet, its gateway, and the range that
/// dynamic allocation draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub range: Ipv4Network,
}

impl Pool {
    /// Validates a network's addressing. The gateway defaults to the
    /// subnet's first address, the range to the whole subnet.
    pub fn new(
        subnet: Ipv4Network,
        gateway: Option<Ipv4Addr>,
        ip_range: Option<Ipv4Network>,
    ) -> Result<Pool, IpamError> {
        if subnet.ip() != subnet.network() {
            return Err(IpamError::HostBitsSet {
                subnet,
                network: subnet.network(),
                prefix: subnet.prefix(),
            });
        }
        if subnet.prefix() > 30 {
            return Err(IpamError::TooSmall(subnet));
        }
        let gateway = gateway.unwrap_or_else(|| first_host(subnet));
        if !is_host_of(subnet, gateway) {
            return Err(IpamError::GatewayOutside { gateway, subnet });
        }
        let range = match ip_range {
            Some(r) => {
                let r = Ipv4Network::new(r.network(), r.prefix()).expect("valid prefix");
                if !r.is_subnet_of(subnet) {
                    return Err(IpamError::RangeOutside { range: r, subnet });
                }
                r
            }
            None => subnet,
        };
        Ok(Pool {
            subnet,
            gateway,
            range,
        })
    }

    /// Picks an address: `requested` if it is free, else the lowest free
    /// address of the range. `used` holds the addresses taken (by endpoints
    /// or reserved by the driver).
    pub fn allocate(
        &self,
        used: &BTreeSet<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = requested {
            if !is_host_of(self.subnet, ip) {
                return Err(IpamError::AddressOutside {
                    ip,
                    subnet: self.subnet,
                });
            }
            if ip == self.gateway {
                return Err(IpamError::AddressIsGateway(ip));
            }
            if used.contains(&ip) {
                return Err(IpamError::AddressInUse(ip));
            }
            return Ok(ip);
        }
        let start = u32::from(self.range.network());
        let end = u32::from(self.range.broadcast());
        (start..=end)
            .map(Ipv4Addr::from)
            .find(|ip| is_host_of(self.subnet, *ip) && *ip != self.gateway && !used.contains(ip))
            .ok_or(IpamError::Exhausted(self.range))
    }
}

/// The subnet's first usable address.
pub fn first_host(subnet: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// `ip` is in the subnet and is neither its network nor its broadcast address.
pub fn is_host_of(subnet: Ipv4Network, ip: Ipv4Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Docker's default address pools: 172.17.0.0/16 to 172.31.0.0/16, then
/// 192.168.0.0/20 to 192.168.240.0/20. The first one that overlaps none of
/// `taken` is the next network's subnet.
pub fn next_free_subnet(taken: &[Ipv4Network]) -> Option<Ipv4Network> {
    let b16 = (17..=31).map(|b| Ipv4Network::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let c20 = (0..16).map(|i| Ipv4Network::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    b16.chain(c20)
        .find(|candidate| taken.iter().all(|t| !t.overlaps(*candidate)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_gateway_to_first_address_and_allocates_lowest_free() {
        let p = Pool::new(net("172.17.0.0/16"), None, None).unwrap();
        assert_eq!(p.gateway, ip("172.17.0.1"));
        let mut used = BTreeSet::new();
        assert_eq!(p.allocate(&used, None).unwrap(), ip("172.17.0.2"));
        used.insert(ip("172.17.0.2"));
        used.insert(ip("172.17.0.4"));
        assert_eq!(p.allocate(&used, None).unwrap(), ip("172.17.0.3"));
        used.insert(ip("172.17.0.3"));
        assert_eq!(p.allocate(&used, None).unwrap(), ip("172.17.0.5"));
    }

    #[test]
    fn an_address_is_never_handed_out_twice() {
        let p = Pool::new(net("10.0.0.0/29"), None, None).unwrap();
        let mut used = BTreeSet::new();
        for _ in 0..5 {
            let a = p.allocate(&used, None).unwrap();
            assert!(used.insert(a), "{a} handed out twice");
        }
        // .0 network, .1 gateway, .2-.6 taken, .7 broadcast.
        assert_eq!(
            p.allocate(&used, None),
            Err(IpamError::Exhausted(net("10.0.0.0/29")))
        );
    }

    #[test]
    fn ip_range_limits_dynamic_allocation_but_not_static() {
        let p = Pool::new(net("10.1.0.0/16"), None, Some(net("10.1.5.0/24"))).unwrap();
        let used = BTreeSet::new();
        // The range's own network address is a host of the larger subnet.
        assert_eq!(p.allocate(&used, None).unwrap(), ip("10.1.5.0"));
        assert_eq!(
            p.allocate(&used, Some(ip("10.1.9.9"))).unwrap(),
            ip("10.1.9.9")
        );
        let used = BTreeSet::from([ip("10.1.5.0"), ip("10.1.5.1"), ip("10.1.5.2")]);
        let p = Pool::new(net("10.1.0.0/16"), None, Some(net("10.1.5.0/30"))).unwrap();
        assert_eq!(p.allocate(&used, None).unwrap(), ip("10.1.5.3"));
        let used = BTreeSet::from([
            ip("10.1.5.0"),
            ip("10.1.5.1"),
            ip("10.1.5.2"),
            ip("10.1.5.3"),
        ]);
        assert!(matches!(
            p.allocate(&used, None),
            Err(IpamError::Exhausted(_))
        ));
    }

    #[test]
    fn range_skips_a_gateway_inside_it() {
        let p = Pool::new(net("10.2.0.0/24"), Some(ip("10.2.0.2")), None).unwrap();
        assert_eq!(p.allocate(&BTreeSet::new(), None).unwrap(), ip("10.2.0.1"));
        let used = BTreeSet::from([ip("10.2.0.1")]);
        assert_eq!(p.allocate(&used, None).unwrap(), ip("10.2.0.3"));
    }

    #[test]
    fn rejects_bad_pools() {
        assert_eq!(
            Pool::new(net("172.17.0.1/16"), None, None),
            Err(IpamError::HostBitsSet {
                subnet: net("172.17.0.1/16"),
                network: ip("172.17.0.0"),
                prefix: 16
            })
        );
        assert!(matches!(
            Pool::new(net("10.0.0.0/31"), None, None),
            Err(IpamError::TooSmall(_))
        ));
        assert!(matches!(
            Pool::new(net("10.0.0.0/24"), Some(ip("10.0.1.1")), None),
            Err(IpamError::GatewayOutside { .. })
        ));
        assert!(matches!(
            Pool::new(net("10.0.0.0/24"), Some(ip("10.0.0.255")), None),
            Err(IpamError::GatewayOutside { .. })
        ));
        assert!(matches!(
            Pool::new(net("10.0.0.0/24"), None, Some(net("10.0.0.0/16"))),
            Err(IpamError::RangeOutside { .. })
        ));
    }

    #[test]
    fn rejects_bad_static_addresses() {
        let p = Pool::new(net("10.0.0.0/24"), None, None).unwrap();
        let used = BTreeSet::from([ip("10.0.0.7")]);
        assert!(matches!(
            p.allocate(&used, Some(ip("10.0.1.7"))),
            Err(IpamError::AddressOutside { .. })
        ));
        assert!(matches!(
            p.allocate(&used, Some(ip("10.0.0.0"))),
            Err(IpamError::AddressOutside { .. })
        ));
        assert_eq!(
            p.allocate(&used, Some(ip("10.0.0.1"))),
            Err(IpamError::AddressIsGateway(ip("10.0.0.1")))
        );
        assert_eq!(
            p.allocate(&used, Some(ip("10.0.0.7"))),
            Err(IpamError::AddressInUse(ip("10.0.0.7")))
        );
    }

    #[test]
    fn next_free_subnet_follows_dockers_pools() {
        assert_eq!(next_free_subnet(&[]), Some(net("172.17.0.0/16")));
        assert_eq!(
            next_free_subnet(&[net("172.17.0.0/16"), net("172.18.5.0/24")]),
            Some(net("172.19.0.0/16"))
        );
        let all16: Vec<_> = (17..=31)
            .map(|b| Ipv4Network::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap())
            .collect();
        assert_eq!(next_free_subnet(&all16), Some(net("192.168.0.0/20")));
        // A route covering everything leaves nothing.
        assert_eq!(
            next_free_subnet(&[net("0.0.0.0/1"), net("128.0.0.0/1")]),
            None
        );
    }
}
