//! An endpoint: one container interface attached to a dnet network.

/// Value of [`crate::maps::ENDPOINTS_BY_IP`] and [`crate::maps::ENDPOINTS_BY_IF`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// ifindex of the host-side veth (the container side is its peer).
    pub ifindex: u32,
    /// The endpoint's IPv4 address.
    pub addr_be: u32,
    /// The network the endpoint belongs to (index into [`crate::maps::NETWORKS`]).
    pub net_id: u32,
    /// Index of the endpoint's counters in [`crate::maps::STATS`].
    pub slot: u32,
    /// The container-side MAC.
    pub mac: [u8; 6],
    /// Reserved, zero.
    pub _pad: [u8; 2],
}
