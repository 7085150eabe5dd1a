//! IP address management: a network's pool and the choice of an address.
//!
//! Pure logic: the caller passes the addresses in use (derived from the
//! endpoints in the state, so allocations persist with them).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};

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
    #[error("invalid IPv6 subnet {subnet}: host bits are set (did you mean {network}/{prefix}?)")]
    HostBitsSet6 {
        subnet: Ipv6Network,
        network: Ipv6Addr,
        prefix: u8,
    },
    #[error("invalid IPv6 subnet {0}: a prefix shorter than /{MIN_PREFIX6} is not taken")]
    TooLarge6(Ipv6Network),
    #[error("invalid IPv6 subnet {0}: a network needs a prefix of /{MAX_PREFIX6} or shorter")]
    TooSmall6(Ipv6Network),
    #[error(
        "invalid IPv6 subnet {0}: the default allocation needs a prefix of /{DEFAULT_PREFIX6} or shorter"
    )]
    TooSmallDefault6(Ipv6Network),
    #[error("invalid IPv6 subnet {subnet}: {why}")]
    Reserved6 {
        subnet: Ipv6Network,
        why: &'static str,
    },
    #[error("IPv6 gateway {gateway} is not a usable address of subnet {subnet}")]
    GatewayOutside6 {
        gateway: Ipv6Addr,
        subnet: Ipv6Network,
    },
    #[error("IPv6 ip-range {range} is not inside subnet {subnet}")]
    RangeOutside6 {
        range: Ipv6Network,
        subnet: Ipv6Network,
    },
    #[error("address {ip} is not a usable address of subnet {subnet}")]
    AddressOutside6 { ip: Ipv6Addr, subnet: Ipv6Network },
    #[error("address {0} is the network's IPv6 gateway")]
    AddressIsGateway6(Ipv6Addr),
    #[error("address {0} is already in use")]
    AddressInUse6(Ipv6Addr),
    #[error("no free address left in {0}")]
    Exhausted6(Ipv6Network),
}

/// The shortest IPv6 prefix a network may have (a site's /48).
pub const MIN_PREFIX6: u8 = 48;
/// The longest IPv6 prefix a network may have (room for a gateway and a
/// few endpoints).
pub const MAX_PREFIX6: u8 = 124;
/// The prefix of IPv6 subnets dnet picks itself (and the longest one
/// `--fixed-cidr-v6` takes): a /64, as SLAAC-era tools expect.
pub const DEFAULT_PREFIX6: u8 = 64;

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

/// A network's IPv6 addresses: as [`Pool`], for the IPv6 side of a
/// dual-stack network. No address is a broadcast; the subnet's first one
/// (the subnet-router anycast address) is never handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool6 {
    pub subnet: Ipv6Network,
    pub gateway: Ipv6Addr,
    pub range: Ipv6Network,
}

impl Pool6 {
    /// Validates the IPv6 side of a network. The gateway defaults to
    /// `<subnet>::1`, the range to the whole subnet.
    pub fn new(
        subnet: Ipv6Network,
        gateway: Option<Ipv6Addr>,
        ip_range: Option<Ipv6Network>,
    ) -> Result<Pool6, IpamError> {
        check_subnet6(subnet)?;
        let gateway = gateway.unwrap_or_else(|| first_host6(subnet));
        if !is_host_of6(subnet, gateway) {
            return Err(IpamError::GatewayOutside6 { gateway, subnet });
        }
        let range = match ip_range {
            Some(r) => {
                let r = Ipv6Network::new(r.network(), r.prefix()).expect("valid prefix");
                if !r.is_subnet_of(subnet) {
                    return Err(IpamError::RangeOutside6 { range: r, subnet });
                }
                r
            }
            None => subnet,
        };
        Ok(Pool6 {
            subnet,
            gateway,
            range,
        })
    }

    /// Picks an address: `requested` if it is free, else the lowest free
    /// address of the range (sequential, as Docker 28+). Looks at no more
    /// candidates than there are addresses in use, plus two.
    pub fn allocate(
        &self,
        used: &BTreeSet<Ipv6Addr>,
        requested: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, IpamError> {
        if let Some(ip) = requested {
            if !is_host_of6(self.subnet, ip) {
                return Err(IpamError::AddressOutside6 {
                    ip,
                    subnet: self.subnet,
                });
            }
            if ip == self.gateway {
                return Err(IpamError::AddressIsGateway6(ip));
            }
            if used.contains(&ip) {
                return Err(IpamError::AddressInUse6(ip));
            }
            return Ok(ip);
        }
        let start = u128::from(self.range.network());
        let end = u128::from(self.range.broadcast());
        (start..=end)
            .take(used.len() + 3)
            .map(Ipv6Addr::from)
            .find(|ip| is_host_of6(self.subnet, *ip) && *ip != self.gateway && !used.contains(ip))
            .ok_or(IpamError::Exhausted6(self.range))
    }
}

/// An IPv6 subnet a network may have: host bits clear, /48 to /124, and
/// not of a range with a meaning of its own.
pub fn check_subnet6(subnet: Ipv6Network) -> Result<(), IpamError> {
    if subnet.ip() != subnet.network() {
        return Err(IpamError::HostBitsSet6 {
            subnet,
            network: subnet.network(),
            prefix: subnet.prefix(),
        });
    }
    if subnet.prefix() < MIN_PREFIX6 {
        return Err(IpamError::TooLarge6(subnet));
    }
    if subnet.prefix() > MAX_PREFIX6 {
        return Err(IpamError::TooSmall6(subnet));
    }
    let reserved: [(&str, u8, &'static str); 5] = [
        (
            "fe80::",
            10,
            "link-local addresses (fe80::/10) belong to each link",
        ),
        (
            "::ffff:0:0",
            96,
            "IPv4-mapped addresses (::ffff:0:0/96) are not IPv6 hosts",
        ),
        ("ff00::", 8, "multicast addresses (ff00::/8) are not hosts"),
        (
            "::",
            96,
            "the unspecified, loopback and IPv4-compatible addresses (::/96) are not hosts",
        ),
        (
            "64:ff9b::",
            96,
            "the NAT64 prefix (64:ff9b::/96) is not a network of hosts",
        ),
    ];
    for (net, prefix, why) in reserved {
        let r = Ipv6Network::new(net.parse().expect("a literal"), prefix).expect("a literal");
        if r.overlaps(subnet) {
            return Err(IpamError::Reserved6 { subnet, why });
        }
    }
    Ok(())
}

/// A subnet for the default allocation (`--fixed-cidr-v6`): as
/// [`check_subnet6`], and no longer than /64.
pub fn check_default_subnet6(subnet: Ipv6Network) -> Result<(), IpamError> {
    check_subnet6(subnet)?;
    if subnet.prefix() > DEFAULT_PREFIX6 {
        return Err(IpamError::TooSmallDefault6(subnet));
    }
    Ok(())
}

/// `<subnet>::1`.
pub fn first_host6(subnet: Ipv6Network) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

/// `ip` is in the subnet and is not its first (subnet-router anycast)
/// address.
pub fn is_host_of6(subnet: Ipv6Network, ip: Ipv6Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network()
}

/// A random unique local /48 (RFC 4193: `fd` and 40 random bits).
pub fn random_ula48() -> Ipv6Network {
    let r: [u8; 5] = rand::random();
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[1..6].copy_from_slice(&r);
    Ipv6Network::new(Ipv6Addr::from(a), 48).expect("a /48")
}

/// The first /64 of the ULA /48 `ula` that overlaps none of `taken`.
pub fn next_free_subnet6(ula: Ipv6Network, taken: &[Ipv6Network]) -> Option<Ipv6Network> {
    let base = u128::from(ula.network());
    (0..=u16::MAX as u128)
        .map(|i| {
            Ipv6Network::new(Ipv6Addr::from(base | (i << 64)), DEFAULT_PREFIX6).expect("a /64")
        })
        .find(|c| taken.iter().all(|t| !t.overlaps(*c)))
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

    fn net6(s: &str) -> Ipv6Network {
        s.parse().unwrap()
    }
    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_pool_is_sequential_from_gateway_plus_one() {
        let p = Pool6::new(net6("fd00:1::/64"), None, None).unwrap();
        assert_eq!(p.gateway, ip6("fd00:1::1"));
        let mut used = BTreeSet::new();
        for want in ["fd00:1::2", "fd00:1::3", "fd00:1::4"] {
            let a = p.allocate(&used, None).unwrap();
            assert_eq!(a, ip6(want));
            assert!(used.insert(a));
        }
        used.remove(&ip6("fd00:1::3"));
        assert_eq!(p.allocate(&used, None).unwrap(), ip6("fd00:1::3"));
        // A range: its own first address is a host of the larger subnet.
        let p = Pool6::new(net6("fd00:1::/64"), None, Some(net6("fd00:1::100/120"))).unwrap();
        assert_eq!(
            p.allocate(&BTreeSet::new(), None).unwrap(),
            ip6("fd00:1::100")
        );
        // A small subnet runs out.
        let p = Pool6::new(net6("fd00:2::/124"), None, None).unwrap();
        let mut used = BTreeSet::new();
        for _ in 0..14 {
            used.insert(p.allocate(&used, None).unwrap());
        }
        assert_eq!(
            p.allocate(&used, None),
            Err(IpamError::Exhausted6(net6("fd00:2::/124")))
        );
    }

    #[test]
    fn ipv6_static_addresses_are_checked() {
        let p = Pool6::new(net6("fd00:1::/64"), None, None).unwrap();
        let used = BTreeSet::from([ip6("fd00:1::7")]);
        assert_eq!(
            p.allocate(&used, Some(ip6("fd00:1::99"))).unwrap(),
            ip6("fd00:1::99")
        );
        assert!(matches!(
            p.allocate(&used, Some(ip6("fd00:2::7"))),
            Err(IpamError::AddressOutside6 { .. })
        ));
        assert!(matches!(
            p.allocate(&used, Some(ip6("fd00:1::"))),
            Err(IpamError::AddressOutside6 { .. })
        ));
        assert_eq!(
            p.allocate(&used, Some(ip6("fd00:1::1"))),
            Err(IpamError::AddressIsGateway6(ip6("fd00:1::1")))
        );
        assert_eq!(
            p.allocate(&used, Some(ip6("fd00:1::7"))),
            Err(IpamError::AddressInUse6(ip6("fd00:1::7")))
        );
    }

    #[test]
    fn bad_ipv6_subnets_are_refused() {
        assert!(matches!(
            Pool6::new(net6("fd00:1::1/64"), None, None),
            Err(IpamError::HostBitsSet6 { .. })
        ));
        assert!(matches!(
            Pool6::new(net6("fd00::/47"), None, None),
            Err(IpamError::TooLarge6(_))
        ));
        assert!(Pool6::new(net6("fd00::/48"), None, None).is_ok());
        assert!(matches!(
            Pool6::new(net6("fd00::/126"), None, None),
            Err(IpamError::TooSmall6(_))
        ));
        for bad in [
            "fe80::/64",
            "::ffff:0:0/96",
            "::ffff:10.0.0.0/120",
            "ff02::/64",
            "::/96",
        ] {
            assert!(
                matches!(
                    Pool6::new(net6(bad), None, None),
                    Err(IpamError::Reserved6 { .. })
                ),
                "{bad} accepted"
            );
        }
        assert!(check_default_subnet6(net6("fd00:1::/64")).is_ok());
        assert!(matches!(
            check_default_subnet6(net6("fd00:1::/80")),
            Err(IpamError::TooSmallDefault6(_))
        ));
        assert!(matches!(
            check_default_subnet6(net6("fe80::/64")),
            Err(IpamError::Reserved6 { .. })
        ));
        assert!(matches!(
            Pool6::new(net6("fd00:1::/64"), Some(ip6("fd00:2::1")), None),
            Err(IpamError::GatewayOutside6 { .. })
        ));
        assert!(matches!(
            Pool6::new(net6("fd00:1::/64"), Some(ip6("fd00:1::")), None),
            Err(IpamError::GatewayOutside6 { .. })
        ));
        assert!(matches!(
            Pool6::new(net6("fd00:1::/64"), None, Some(net6("fd00::/56"))),
            Err(IpamError::RangeOutside6 { .. })
        ));
    }

    #[test]
    fn default_ipv6_subnets_are_64s_of_the_ula_48() {
        let ula = random_ula48();
        assert_eq!(ula.prefix(), 48);
        assert_eq!(ula.network().octets()[0], 0xfd);
        assert!(check_subnet6(ula).is_ok());
        let ula = net6("fd12:3456:789a::/48");
        let first = next_free_subnet6(ula, &[]).unwrap();
        assert_eq!(first, net6("fd12:3456:789a::/64"));
        assert_eq!(
            next_free_subnet6(ula, &[first, net6("fd12:3456:789a:1:8000::/80")]),
            Some(net6("fd12:3456:789a:2::/64"))
        );
        assert_eq!(next_free_subnet6(ula, &[ula]), None);
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
