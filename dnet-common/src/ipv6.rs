//! IPv6 as the datapath sees it: the seam between the control plane, which
//! fills these maps for dual-stack networks and endpoints, and the eBPF
//! programs, which read them.
//!
//! IPv6 lives in maps of its own so that IPv4's hot-path values keep their
//! size and layout (and the maps an older daemon pinned stay adoptable): an
//! IPv4-only network and its endpoints have no entry here, and the datapath
//! drops their IPv6 with the `ipv6` reason as before.
//!
//! Addresses are `[u8; 16]` in network byte order, as the packet holds them.

/// The network translates its IPv6 flows to the uplink's global address
/// (NAT66, `-o gateway_mode_ipv6=nat`, the default).
pub const NET6_F_NAT: u32 = 1 << 0;

/// Value of [`crate::maps::NETWORKS6`], indexed by network id (the same id as
/// [`crate::maps::NETWORKS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Network6 {
    /// Subnet address (host bits zero).
    pub subnet: [u8; 16],
    /// The gateway address (a local address of the host namespace, on `lo`).
    pub gateway: [u8; 16],
    /// `NET6_F_*` flags.
    pub flags: u32,
    /// Prefix length of [`Self::subnet`] (48 to 128).
    pub prefix_len: u8,
    /// Nonzero when the network is dual-stack (the entry is in use).
    pub active: u8,
    /// Reserved, zero.
    pub _pad: [u8; 2],
}

/// Key of [`crate::maps::ENDPOINTS6_BY_IP`] and of the IPv6 subnet trie's
/// data: an IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ip6 {
    /// The address, network byte order.
    pub addr: [u8; 16],
}

/// Value of [`crate::maps::ENDPOINT6_BY_IF`]: a dual-stack endpoint's IPv6
/// address, by the host-side veth's ifindex (what the source check of a
/// container's IPv6 compares against).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint6 {
    /// The endpoint's IPv6 address.
    pub addr: [u8; 16],
}

/// Key of [`crate::maps::SERVICES6`]: a port published over IPv6 (to a
/// dual-stack container).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey6 {
    /// The host address it is published on; all zero for every address.
    pub addr: [u8; 16],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of [`crate::maps::SERVICES6`]: the container's IPv6 address and
/// port a published port leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service6 {
    pub backend: [u8; 16],
    pub backend_port_be: u16,
    pub _pad: u16,
}

/// Key of [`crate::maps::SOCK_REVNAT6`]: a host IPv6 socket that was pointed
/// at a published port's backend, and that backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey6 {
    pub cookie: u64,
    pub backend: [u8; 16],
    pub backend_port_be: u16,
    pub _pad: [u8; 6],
}

/// Value of [`crate::maps::SOCK_REVNAT6`]: the address the socket asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRev6 {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub _pad: u16,
}
