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

/// Bound on broadcast and multicast copies per packet.
pub const MAX_FANOUT: usize = 64;

/// Value of [`crate::maps::NET_MEMBERS`]: who gets a network's broadcasts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetMembers {
    /// Number of endpoints in the network (may exceed [`MAX_FANOUT`]).
    pub count: u32,
    /// Reserved, zero.
    pub _pad: u32,
    /// Host-side veth ifindexes of the first [`MAX_FANOUT`] members.
    pub ifindex: [u32; MAX_FANOUT],
}

impl Default for NetMembers {
    fn default() -> Self {
        NetMembers {
            count: 0,
            _pad: 0,
            ifindex: [0; MAX_FANOUT],
        }
    }
}
