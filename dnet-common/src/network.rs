//! A network as the datapath sees it.

/// Containers of this network may not talk to each other (`-o icc=false`).
pub const NET_F_NO_ICC: u32 = 1 << 0;
/// The network has no outbound connectivity (`--internal`).
pub const NET_F_INTERNAL: u32 = 1 << 1;

/// Value of [`crate::maps::NETWORKS`], indexed by network id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Network {
    /// Subnet address (host bits zero).
    pub subnet_be: u32,
    /// Subnet mask.
    pub mask_be: u32,
    /// The gateway address (a local address of the host namespace).
    pub gateway_be: u32,
    /// `NET_F_*` flags.
    pub flags: u32,
    /// The MAC that answers for the gateway; every host-side veth of the
    /// network carries it, so frames to it reach the host stack.
    pub gateway_mac: [u8; 6],
    /// Nonzero when the entry is in use.
    pub active: u8,
    /// Reserved, zero.
    pub _pad: u8,
}

/// Value of [`crate::maps::NET_FANOUT`], indexed by network id: how many
/// members the network's broadcasts and multicasts go to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetFanout {
    /// Number of members: [`crate::maps::NET_MEMBER`] holds indexes
    /// `0..count` of the network.
    pub count: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// Key of [`crate::maps::NET_MEMBER`]: a network's member by its index.
/// Indexes are dense (`0..count`), so a broadcast walks them in a bounded
/// loop without searching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MemberKey {
    /// Network id.
    pub net_id: u32,
    /// Index of the member, below the network's [`NetFanout::count`].
    pub index: u32,
}
